"""Every console entry point refuses bad settings the way argparse refuses a bad argument: `<prog>: error: <what>` on
stderr, status 2, no traceback, and nothing written."""
import pytest

from chexseg.core import refusal
from chexseg.classifier import chexseg_train_classifier
from chexseg.distill import chexseg_distill
from chexseg.metrics import chexseg_eval
from chexseg.paper import chexseg_paper
from chexseg.phantom import chexseg_phantom
from chexseg.segment import chexseg_segment
from chexseg.semi import chexseg_train_segmenter
from chexseg.sweep import chexseg_sweep

CASES = [
    (chexseg_sweep, ['--scale', 'smok'], "Unknown scale 'smok'"),
    (chexseg_sweep, ['--scale', 'smoke', '--ps', '0.9', '2'], 'p must lie in [0, 1]'),
    (chexseg_sweep, ['--scale', 'smoke', '--trials', '0'], 'trials must be at least 1, got 0'),
    (chexseg_sweep, ['--scale', 'smoke', '--data_root', 'nowhere'], 'nowhere is not a folder'),
    (chexseg_paper, ['--scale', 'smoke', '--ps', '1.5'], 'got 1.5'),
    (chexseg_paper, ['--scale', 'smoke', '--data_root', 'nowhere'], 'nowhere is not a folder'),
    (chexseg_paper, ['--scale', 'smoke', '--student_steps', '0'], 'student_steps must be a whole number of steps, at least 1, got 0'),
    (chexseg_distill, ['--scale', 'smoke', '--trials', '0'], 'trials must be at least 1, got 0'),
    (chexseg_distill, ['--scale', 'smoke', '--fractions', '2'], 'got 2.0'),
    (chexseg_distill, ['--scale', 'smoke', '--data_root', 'nowhere'], 'nowhere is not a folder'),
    (chexseg_train_segmenter, ['--scale', 'smoke', '--p', '3'], 'got 3.0'),
    (chexseg_train_segmenter, ['--scale', 'smoke', '--data_root', 'nowhere'], 'nowhere is not a folder'),
    (chexseg_train_segmenter, ['--scale', 'smoke', '--trial', '5'], '--trial must lie in [0, 1) at scale smoke, got 5'),
    (chexseg_train_classifier, ['--dataset', 'folder'], '--data_root is required with --dataset folder'),
    (chexseg_segment, ['--run', 'nowhere', '--films', '.', '--out', 'pred.json'], 'run.json not found'),
    (chexseg_eval, ['--gt', 'gt.json', '--pred', 'gt.json', '--out', 'out'], 'JSON file not found: gt.json'),
    (chexseg_eval, ['--gt', 'gt.json', '--pred', 'gt.json', '--out', 'out', '--n_boot', '0'], 'argument --n_boot: must be at least 1, got 0'),
    (chexseg_sweep, ['--scale', 'smoke', '--set', 'size=8'], 'size must be 32 to 1024 pixels, got 8'),
    (chexseg_phantom, ['--n', '1', '--out', 'films', '--size', '7'], 'got 7'),
]

@pytest.mark.parametrize('main, argv, message', CASES, ids=[f"{m.__name__} {' '.join(a)}" for m, a, _ in CASES])
def test_a_console_entry_point_refuses_bad_settings_in_one_line(main, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # every default output folder (runs/, figures/) would land here
    err = refusal(main, argv)                         # status 2, or it raises
    last = err.strip().splitlines()[-1]               # argparse's own refusals print the usage first
    assert last.startswith(f"{main.__name__}: error: ") and message in last and 'Traceback' not in err, err
    assert list(tmp_path.iterdir()) == []
