"CheXseg's semi-supervised pieces: exact-p mixing, the Dice loss, output thresholds, and early errors."
import numpy as np, pytest, torch
from chexseg.core import run_dir
from chexseg.encoders import init_encoder
from chexseg.semi import (MaskSet, MixedDataset, soft_dice_loss, tune_output_thresholds, experiment_config,
                          build_segmenter, phantom_splits, segmenter_settings, METHOD_VERSION)


def sets():
    e = MaskSet(torch.zeros(4, 1, 8, 8), torch.ones(4, 10, 8, 8))
    w = MaskSet(torch.zeros(6, 1, 8, 8), torch.zeros(6, 10, 8, 8))
    return e, w


@pytest.mark.parametrize('p', [0.0, 0.3, 0.6, 0.7, 0.85, 1.0])
def test_realised_expert_fraction_matches_p(p):
    e, w = sets()
    n = 20_000
    mix = MixedDataset(e, w, p, length=n, seed=5)
    frac = np.mean([mix.source(k) == 'expert' for k in range(n)])
    assert abs(frac - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12


def test_items_come_from_the_drawn_source():
    e, w = sets()
    mix = MixedDataset(e, w, 0.5, length=50, seed=2)
    for k in range(50):
        item = mix[k]
        assert item['is_expert'] == bool(item['mask'].max() == 1) == (mix.source(k) == 'expert')


@pytest.mark.parametrize('p', [0.0, 0.5, 0.9, 1.0])
def test_every_pool_image_is_used_evenly(p):
    "800 samples (a CPU-scale training) from 200 expert images and 100 weak masks: each pool in shuffled passes."
    e = MaskSet(torch.zeros(200, 1, 2, 2), torch.ones(200, 10, 2, 2))
    w = MaskSet(torch.zeros(100, 1, 2, 2), torch.zeros(100, 10, 2, 2))
    mix = MixedDataset(e, w, p, length=800, seed=7)
    for flag, pool in ((True, e), (False, w)):
        drawn = int((mix.is_expert == flag).sum())
        uses = torch.bincount(mix.rows[mix.is_expert == flag], minlength=len(pool))
        assert uses.sum() == drawn and uses.max() - uses.min() <= 1
        assert (uses > 0).sum() == min(drawn, len(pool))    # no image unused while another is used twice


def test_dice_loss_on_hand_made_masks():
    target = torch.zeros(1, 2, 2, 2); target[0, 0, 0, 0] = 1
    logits = torch.full((1, 2, 2, 2), -30.); logits[0, 0, 0, :] = 30.   # class 0: 2 predicted, 1 true, 1 overlap
    # class 0 dice (2*1+1)/(2+1+1) = 0.75; class 1 empty and predicted empty: (0+1)/(0+0+1) = 1
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - (0.75 + 1) / 2, abs=1e-6)


def test_output_thresholds_pick_the_best_grid_value():
    masks = torch.zeros(3, 10, 16, 16, dtype=torch.uint8); masks[:, :, 4:12, 4:12] = 1
    probs = torch.full((3, 10, 16, 16), 0.1); probs[:, :, 2:14, 2:14] = 0.22; probs[:, :, 4:12, 4:12] = 0.6
    probs[0, 3, 5, 5] = 0.4   # one true pixel of one class is less sure: only thresholds below 0.4 keep it
    t = tune_output_thresholds(probs, masks)
    # thresholds in [0.25, 0.4) reproduce the truth exactly; 0.25 is the first such grid value
    assert np.allclose(t, 0.25)
    assert torch.equal((probs > torch.tensor(t, dtype=torch.float32)[:, None, None]).to(torch.uint8), masks)


@pytest.mark.parametrize('kw,msg', [(dict(p=-0.1), 'p must lie in [0, 1]'), (dict(p=1.01), 'p must lie in [0, 1]'),
                                    (dict(weak_source='gradcam'), 'Unknown weak source'),
                                    (dict(encoder_init='imagenet21k'), 'Unknown encoder initialisation'),
                                    (dict(steps=0), 'steps must be at least 1'), (dict(stepz=3), 'Unknown setting')])
def test_bad_settings_fail_before_any_work(kw, msg):
    with pytest.raises(ValueError, match=msg.replace('[', r'\[').replace(']', r'\]')): experiment_config('smoke', **kw)


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match='Unknown encoder'): build_segmenter('resnet7')


def test_segmenter_cache_keys_on_the_method_version(tmp_path):
    cfg = experiment_config('smoke', p=1.0)
    up = dict(specs=phantom_splits(cfg), cam_classifier=None, init_weights=None)
    assert segmenter_settings(cfg, up, 0)['method_version'] == METHOD_VERSION
    older = dict(cfg, method_version=METHOD_VERSION - 1)   # a segmenter trained by older code is not reused
    assert run_dir(tmp_path, 'segmenter', segmenter_settings(older, up, 0)) != run_dir(tmp_path, 'segmenter', segmenter_settings(cfg, up, 0))


def test_train_segmenter_cli_smoke(tmp_path, capsys):
    from chexseg.semi import chexseg_train_segmenter
    from chexseg.core import load_weights
    chexseg_train_segmenter(['--scale', 'smoke', '--p', '0.5', '--root', str(tmp_path), '--device', 'cpu'])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    sd, meta = load_weights(path, arch='deeplabv3plus-resnet18')
    assert len(meta['losses']) == 2 and meta['init'] == 'chexpert'


def test_train_segmenter_cli_under_torchrun(tmp_path):
    "The console script under torchrun: 2 gloo processes train one segmenter (global batch split over the ranks) and rank 0 saves it."
    import os, subprocess, sys
    from pathlib import Path
    from chexseg.core import load_weights
    script = Path(sys.executable).parent/'chexseg_train_segmenter'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script),
           '--', '--scale', 'smoke', '--p', '1', '--steps', '3', '--root', str(tmp_path), '--device', 'cpu']
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = [l for l in out.stdout.splitlines() if l.endswith('model.safetensors')]
    assert len(printed) == 1                                        # only rank 0 reports (and saves)
    sd, meta = load_weights(printed[0], arch='deeplabv3plus-resnet18')
    assert len(meta['losses']) == 3 and all(np.isfinite(meta['losses']))


def test_stacked_trials_run_and_keep_their_own_cache(tmp_path):
    "A run whose trials are trained at once: every trial evaluated, their segmenters cached apart from one-at-a-time ones, then loaded."
    from chexseg.semi import run_experiment
    import pandas as pd
    cfg = experiment_config('smoke', p=1.0, encoder_init='random', classifier_arch='resnet18', trials=2, steps=3, stack_trials=True)
    table, results, _ = run_experiment(cfg, tmp_path, tmp_path/'out', 'cpu')
    assert sorted(table.trial.unique()) == [0, 1]
    assert [len(r['losses']) for r in results] == [3, 3]
    assert (tmp_path/'out'/'results.csv').exists()
    weights = sorted((tmp_path/'segmenter').glob('*/model.safetensors'))
    assert len(weights) == 2
    stamps = [w.stat().st_mtime_ns for w in weights]
    again, _, _ = run_experiment(cfg, tmp_path, None, 'cpu')         # loaded, not trained again: same results
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    pd.testing.assert_frame_equal(again, table)
    run_experiment(dict(cfg, stack_trials=False), tmp_path, None, 'cpu')
    assert len(list((tmp_path/'segmenter').glob('*/model.safetensors'))) == 4   # one at a time: other segmenters
