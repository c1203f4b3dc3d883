"The whole-paper driver at smoke scale: every stage runs through papermill and the summary reports on each."
import json
from chexseg.paper import KERNEL_OVERHEAD, STAGE_WALL, regenerate, STAGES


def test_smoke_paper(tmp_path):
    summary = regenerate('smoke', figures=tmp_path/'figures', root=tmp_path/'runs', workers=2, ps=[0, 0.9, 1], sources=['cam'])
    out = tmp_path/'figures'/'smoke'
    meta = json.loads((out/'paper.json').read_text())
    assert {k: v['status'] for k, v in meta['stages'].items()} == {k: 'ok' for k in STAGES}
    for name in ('figure2.png', 'table1.csv', 'figure3.png', 'distill_results.csv', 'figure4.png', 'table2.md',
                 'encoder_results.csv', 'figure5.png', 'figure5_table.csv'):
        assert (out/name).exists(), name
    text = summary.read_text()
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
