"The p-sweep driver end to end at smoke scale: papermill runs 04_semi, the figures and tables come out."
import shutil
import pandas as pd
from chexseg.sweep import run_semi_notebook, run_sweep, sweep_plan


def test_smoke_sweep(tmp_path):
    res = run_sweep(ps=[0, 1], sources=['cam'], scale='smoke', figures=tmp_path/'figures', root=tmp_path/'runs')
    assert set(res.p) == {0.0, 1.0}
    out = tmp_path/'figures'/'smoke'
    for name in ('figure2.png', 'figure2.svg', 'table1.csv', 'table1.md', 'sweep_results.csv', 'sweep.json'):
        assert (out/name).exists(), name
    t1 = pd.read_csv(out/'table1.csv')
    assert len(t1) == 2 and t1.mIoU.between(0, 1).all()
    executed = list((tmp_path/'runs'/'sweep'/'smoke'/'notebooks').glob('*.ipynb'))
    assert len(executed) == 2
    # one worker: the p = 0 run ran second, in the kernel the p = 1 run left; in a kernel of its own it gives the same numbers
    params, out = next(j for j in sweep_plan([0, 1], ['cam'], 'smoke', tmp_path/'runs')[2].jobs if j[1].name == 'p0.0_cam')
    shutil.rmtree(tmp_path/'runs'/'segmenter')                              # its segmenters are trained again, not read
    run_semi_notebook(params, tmp_path/'own', tmp_path)
    for name in ('results.csv', 'per_image_iou.csv'):
        pd.testing.assert_frame_equal(pd.read_csv(out/name), pd.read_csv(tmp_path/'own'/name))


import json
import pytest
from chexseg.sweep import SETUP_CELL, notebook_path, runnable_copy


@pytest.mark.parametrize('name', ['04_semi.ipynb', '05_distill.ipynb', '06_encoders.ipynb', '07_radiologists.ipynb'])
def test_runnable_copies(name):
    """Every notebook a driver executes has a parameters cell in its last section (the run), so that its example-free copy
    keeps the run and every definition and drops every example above them."""
    full = json.loads(notebook_path(name).read_text())['cells']
    lean = json.loads(runnable_copy(name).read_text())['cells']
    start = lambda cells: next(i for i, c in enumerate(cells) if 'parameters' in c['metadata'].get('tags', []))
    assert full[start(full):] == lean[start(lean):]
    exported = lambda cells: [c['source'] for c in cells if c['cell_type'] == 'code' and SETUP_CELL.match(''.join(c['source']))]
    assert exported(full) == exported(lean)
    heading = lambda c: c['cell_type'] == 'markdown' and ''.join(c['source']).startswith('#')
    assert not any(heading(c) for c in full[start(full):]), f"{name}: a section follows the parameters cell, so the drivers run its examples"
    examples = lambda cells: [c for c in cells[:start(cells)] if c['cell_type'] == 'code' and not SETUP_CELL.match(''.join(c['source']))]
    assert examples(full) and not examples(lean)


import time
import nbformat
import chexseg.sweep as sweep


def test_execute_keeps_kernel_warnings_out_of_the_driver_output(tmp_path, monkeypatch, capfd):
    "A driver's kernels print their cells' output into the executed copy and add no log lines of their own to its output."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print('to the notebook', file=sys.stderr)")])
    nbformat.write(nb, tmp_path/'tiny.ipynb')
    monkeypatch.setattr(sweep, 'runnable_copy', lambda name: tmp_path/name)
    monkeypatch.setattr(sweep, 'notebook_path', lambda name: tmp_path/name)
    out = sweep.execute('tiny.ipynb', tmp_path/'executed.ipynb', {})
    assert nbformat.read(out, 4).cells[0].outputs[0]['text'] == 'to the notebook\n'
    assert 'IPKernelApp' not in capfd.readouterr().err


def test_a_kernel_whose_notebook_failed_is_not_kept(tmp_path, monkeypatch):
    "A kept kernel that ran a failing notebook is shut down; the next notebook gets a new kernel, in the same folder."
    cells = dict(ok="import os; print(os.getpid())", bad="import os; print(os.getpid()); 1 / 0")
    for name, source in cells.items(): nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), tmp_path/f'{name}.ipynb')
    monkeypatch.setattr(sweep, 'runnable_copy', lambda name: tmp_path/name)
    monkeypatch.setattr(sweep, 'notebook_path', lambda name: tmp_path/name)
    pid = lambda path: int(nbformat.read(path, 4).cells[0].outputs[0]['text'])
    with sweep.KeptKernel(tmp_path) as kernel:
        first = pid(sweep.execute('ok.ipynb', tmp_path/'1.ipynb', {}, kernel))
        assert pid(sweep.execute('ok.ipynb', tmp_path/'2.ipynb', {}, kernel)) == first        # kept
        with pytest.raises(Exception, match='ZeroDivisionError'): sweep.execute('bad.ipynb', tmp_path/'3.ipynb', {}, kernel)
        assert kernel.km is None                                                           # shut down
        assert pid(sweep.execute('ok.ipynb', tmp_path/'4.ipynb', {}, kernel)) != first       # a new one
    with pytest.raises(ValueError, match='not in'): sweep.execute('ok.ipynb', tmp_path/'5.ipynb', {}, sweep.KeptKernel(tmp_path.parent))


def test_the_pool_runs_its_jobs_in_as_many_kept_kernels_as_workers(tmp_path):
    seen = []
    with sweep.KernelPool(2, lambda job, ex, kernel: (seen.append(kernel), time.sleep(0.1))) as pool:
        pool.add('jobs', sweep.SemiGroup([({}, tmp_path/n) for n in 'abcde'], tmp_path/'nb'))
        pool.wait('jobs')
    assert len(seen) == 5 and len({id(k) for k in seen}) == 2 and all(isinstance(k, sweep.KeptKernel) for k in seen)


import numpy as np
from chexseg.core import PATHOLOGIES, write_json
from chexseg.metrics import bootstrap_miou
from chexseg.semi import METHOD_VERSION, experiment_config, summary_rows
from chexseg.sweep import RUN_PLACES, sweep_jobs


def test_the_sweep_compares_runs_on_the_pathologies_all_of_them_score(tmp_path):
    """A weakly supervised run that never predicts Edema would average nine pathologies beside the others' ten; the
    sweep's means (sweep_results, table 1, figure 2) leave Edema out of every run, and say so."""
    cfg, rng = experiment_config('smoke'), np.random.default_rng(0)
    ids = pd.Index([f'i{k}' for k in range(20)], name='cxr_id')
    for (params, out), p in zip(sweep_jobs([dict(p=0.0, weak_source='cam'), dict(p=1.0, weak_source='cam')], cfg, tmp_path/'runs'), (0.0, 1.0)):
        tables = {k: pd.DataFrame(rng.uniform(0, 1, (20, 10)), index=ids, columns=list(PATHOLOGIES)) for k in range(2)}
        if p == 0: tables[1]['Edema'] = np.nan                                  # trial 1 of the weak run never scores Edema
        out.mkdir(parents=True)
        pd.concat(tables, names=['trial', 'cxr_id']).to_csv(out/'per_image_iou.csv')
        rows = [summary_rows(dict(trial=k, summary=bootstrap_miou(t, cfg['n_boot'], cfg['seed'] + k)), dict(cfg, p=p, weak_source='cam'))
                for k, t in tables.items()]
        pd.concat(rows, ignore_index=True).to_csv(out/'results.csv', index=False)
        settings = dict({k: v for k, v in params.items() if k not in RUN_PLACES}, method_version=METHOD_VERSION, n_boot=cfg['n_boot'], seed=cfg['seed'])
        write_json(dict(settings=settings), out/'run.json')
    res = run_sweep([0, 1], ['cam'], 'smoke', tmp_path/'figures', tmp_path/'runs', collect=True)
    nine = [p for p in PATHOLOGIES if p != 'Edema']
    for (p, k), g in res.groupby(['p', 'trial']):
        table = pd.read_csv(next((tmp_path/'runs'/'sweep'/'smoke').glob(f'p{p}_cam/per_image_iou.csv'))).query('trial == @k')
        assert np.isclose(g.set_index('pathology').miou['mean'], table[nine].mean().mean())
    out = tmp_path/'figures'/'smoke'
    assert json.loads((out/'sweep.json').read_text())['pathologies_left_out'] == ['Edema']
    assert 'leaves out Edema' in (out/'table1.md').read_text()
