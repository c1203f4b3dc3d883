"The p-sweep driver end to end at smoke scale: papermill runs 04_semi, the figures and tables come out."
import pandas as pd
from chexseg.sweep import run_sweep


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


import json
import pytest
from chexseg.sweep import SETUP_CELL, notebook_path, runnable_copy


@pytest.mark.parametrize('name', ['04_semi.ipynb', '05_distill.ipynb', '06_encoders.ipynb', '07_radiologists.ipynb'])
def test_runnable_copies(name):
    "Every notebook a driver executes has a parameters cell, and its example-free copy keeps the run and every definition."
    full = json.loads(notebook_path(name).read_text())['cells']
    lean = json.loads(runnable_copy(name).read_text())['cells']
    start = lambda cells: next(i for i, c in enumerate(cells) if 'parameters' in c['metadata'].get('tags', []))
    assert full[start(full):] == lean[start(lean):]
    exported = lambda cells: [c['source'] for c in cells if c['cell_type'] == 'code' and SETUP_CELL.match(''.join(c['source']))]
    assert exported(full) == exported(lean)
    assert len(lean) <= len(full)


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
