"The whole-paper driver at smoke scale: every stage runs through papermill and the summary reports on each."
import json
from chexseg.paper import KERNEL_OVERHEAD, RUNS_STAGE, STAGE_WALL, regenerate, STAGES


def test_smoke_paper(tmp_path):
    summary = regenerate('smoke', figures=tmp_path/'figures', root=tmp_path/'runs', workers=2, ps=[0, 0.9, 1], sources=['cam'],
                         student_steps=3)
    out = tmp_path/'figures'/'smoke'
    meta = json.loads((out/'paper.json').read_text())
    assert {k: v['status'] for k, v in meta['stages'].items()} == {k: 'ok' for k in (RUNS_STAGE, *STAGES)}
    for stage in ('sweep.json', 'encoders.json'):                    # the pool ran every run before the stages assembled them
        assert json.loads((out/stage).read_text())['new_runs'] == 0, stage
    assert json.loads((out/'runs.json').read_text())['queued']['encoders'] > 0
    for name in ('figure2.png', 'table1.csv', 'figure3.png', 'distill_results.csv', 'figure4.png', 'table2.md',
                 'encoder_results.csv', 'figure5.png', 'figure5_table.csv'):
        assert (out/name).exists(), name
    assert json.loads((out/'distill.json').read_text())['student_steps'] == 3      # the students' steps reach 05_distill
    text = summary.read_text()
    assert 'steps=2, stack_trials=False, student_steps=3.' in text                # the teachers' and the students' steps
    assert 'CheXseg reproduced on the synthetic phantom (smoke scale)' in text
    assert '| CheXseg, CAM, p = 0.9 | 0.299 | 0.' in text             # a reproduced number beside the paper's
    assert '| not run |' not in text, text                          # every claim was checked
    profile = text.split('## Where the time goes')[1]               # seconds per phase of every stage, kernels included
    for row in ('segmenter training', 'classifier training', 'Grad-CAM maps', 'student training', KERNEL_OVERHEAD, STAGE_WALL):
        assert f'| {row} |' in profile, (row, profile)
    executed = sorted(p.name for p in (tmp_path/'runs'/'paper'/'smoke'/'notebooks').glob('*.ipynb'))
    assert executed == ['05_distill.ipynb', '06_encoders.ipynb', '07_radiologists.ipynb']
    study = sorted(p.name.split('-')[0] for p in (tmp_path/'runs'/'encoders'/'smoke'/'notebooks').glob('*.ipynb'))
    assert 'semi_random_fully' in study and 'semi_moco_weak_cam_2' in study, study     # the study's runs went to the kernel pool


import pytest
import chexseg.paper as paper


@pytest.fixture
def sweep_interrupted(monkeypatch):
    "The sweep stage raises what a time cap's SIGINT raises in the middle of it."
    def cut(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(paper, 'run_sweep', cut)


def test_interrupted_run_leaves_a_summary_naming_the_cut_stage(tmp_path, sweep_interrupted):
    "A time cap's SIGINT in the middle of a stage stops the run, and the summary says which stage it cut and after how long."
    with pytest.raises(KeyboardInterrupt):
        regenerate('smoke', stages=['sweep', 'radiologists'], figures=tmp_path/'figures', root=tmp_path/'runs')
    out = tmp_path/'figures'/'smoke'
    meta = json.loads((out/'paper.json').read_text())
    assert list(meta['stages']) == ['sweep'] and meta['stages']['sweep']['status'] == 'stopped: interrupted'
    assert '| sweep | stopped: interrupted |' in (out/'summary.md').read_text()


def test_interrupted_command_line_exits_with_a_message_not_a_traceback(tmp_path, sweep_interrupted):
    with pytest.raises(SystemExit) as stop:
        paper.chexseg_paper(['--scale', 'smoke', '--stages', 'sweep', '--figures', str(tmp_path/'figures'), '--root', str(tmp_path/'runs')])
    assert 'interrupted' in str(stop.value.code) and (tmp_path/'figures'/'smoke'/'summary.md').exists()
