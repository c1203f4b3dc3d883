"Tests for chexseg.metrics: agreement with a CheXlocalize-style reference loop, IoU edge cases, bootstrap, CLI."
import json, subprocess, warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal
from pycocotools import mask as mask_util

from chexseg.core import PATHOLOGIES
from chexseg.data import read_segmentation_json
from chexseg.metrics import (bootstrap_miou, bootstrap_replicates, chexseg_eval, hit_rate, iou_masks, iou_table, miou,
                             paired_bootstrap, pointing_hits, pooled_iou)

H, W = 24, 30
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning:pycocotools')   # its decode, in the reference loop


# ---- a straightforward reference, written the way CheXlocalize's eval.py does it -------------------------------

def encode(m):
    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode()
    return rle


def reference_iou(pred_mask, gt_mask, true_pos_only):
    intersection = np.logical_and(pred_mask, gt_mask)
    union = np.logical_or(pred_mask, gt_mask)
    if true_pos_only:
        if np.sum(pred_mask) == 0 or np.sum(gt_mask) == 0: return np.nan
    elif np.sum(union) == 0: return np.nan
    return np.sum(intersection) / np.sum(union)


def reference_ious(gt_path, pred_path, true_pos_only):
    "Decode both masks of every pair; GT images without prediction get an empty one; pred-only images if not true_pos_only."
    with open(gt_path) as f: gt_dict = json.load(f)
    with open(pred_path) as f: pred_dict = json.load(f)
    ious = {}
    for task in sorted(PATHOLOGIES):
        cxr_ids = sorted(gt_dict)
        ious[task] = []
        for cxr_id in cxr_ids:
            gt_item = gt_dict[cxr_id][task]
            gt_mask = mask_util.decode(gt_item)
            pred_mask = mask_util.decode(pred_dict[cxr_id][task]) if cxr_id in pred_dict else np.zeros(gt_item['size'])
            assert gt_mask.shape == pred_mask.shape
            ious[task].append(reference_iou(pred_mask, gt_mask, true_pos_only))
        if not true_pos_only:
            for cxr_id in sorted(pred_dict):
                if cxr_id not in gt_dict:
                    pred_item = pred_dict[cxr_id][task]
                    ious[task].append(reference_iou(mask_util.decode(pred_item), np.zeros(pred_item['size']), true_pos_only))
                    cxr_ids.append(cxr_id)
    df = pd.DataFrame.from_dict(ious)
    df['img_id'] = cxr_ids
    return df.sort_values(by='img_id')


# ---- random CheXlocalize JSON files ---------------------------------------------------------------------------

def random_mask(rng):
    "Empty (40%), a random rectangle, or a random blob, on an H x W grid."
    kind = rng.integers(0, 5)
    m = np.zeros((H, W), np.uint8)
    if kind < 2: return m
    if kind < 4:
        r0, c0 = rng.integers(0, H - 2), rng.integers(0, W - 2)
        m[r0:r0 + rng.integers(1, 12), c0:c0 + rng.integers(1, 14)] = 1
        return m
    return (rng.random((H, W)) < 0.2).astype(np.uint8)


def random_files(tmp_path, seed=0, n=30):
    "GT and prediction JSON (300 RLEs each, more than pycocotools' area takes at once): 2 GT images lack a prediction, 3 predicted images are not in the GT, some masks identical."
    rng = np.random.default_rng(seed)
    ids = [f'patient{60000 + i}_study1_view1_frontal' for i in rng.permutation(n)]
    gt, pred = {}, {}
    for k, cxr_id in enumerate(ids):
        gt_masks = [random_mask(rng) for _ in PATHOLOGIES]
        pred_masks = [g if rng.random() < 0.1 else random_mask(rng) for g in gt_masks]
        if k >= 3: gt[cxr_id] = {p: encode(m) for p, m in zip(PATHOLOGIES, gt_masks)}
        if k < 3 or k >= 5: pred[cxr_id] = {p: encode(m) for p, m in zip(PATHOLOGIES, pred_masks)}
    (tmp_path / 'gt.json').write_text(json.dumps(gt)); (tmp_path / 'pred.json').write_text(json.dumps(pred))
    return tmp_path / 'gt.json', tmp_path / 'pred.json'


def ours(gt_path, pred_path, true_pos_only):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')    # the missing-prediction warning is expected here
        return iou_table(read_segmentation_json(gt_path), read_segmentation_json(pred_path), true_pos_only)


@pytest.mark.parametrize('true_pos_only', [True, False])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_chexlocalize_reference(tmp_path, seed, true_pos_only):
    gt_path, pred_path = random_files(tmp_path, seed)
    ref = reference_ious(gt_path, pred_path, true_pos_only)
    table = ours(gt_path, pred_path, true_pos_only)
    assert list(table.index) == list(ref['img_id'])
    assert_array_equal(table.to_numpy(), ref[list(PATHOLOGIES)].to_numpy())     # bit-identical, NaN in the same places
    ref_miou = ref[list(PATHOLOGIES)].mean()
    assert_array_equal(miou(table)[list(PATHOLOGIES)].to_numpy(), ref_miou.to_numpy())
    assert miou(table)['mean'] == ref_miou.mean()
    assert table.notna().to_numpy().sum() > 10                                  # the comparison is not vacuous


def test_raw_json_dicts_give_the_same_table(tmp_path):
    gt_path, pred_path = random_files(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        raw = iou_table(json.loads(gt_path.read_text()), json.loads(pred_path.read_text()), False)
    assert_array_equal(raw.to_numpy(), ours(gt_path, pred_path, False).to_numpy())


# ---- IoU edge cases -------------------------------------------------------------------------------------------

EMPTY = np.zeros((H, W), np.uint8)
LEFT = EMPTY.copy(); LEFT[:, :10] = 1
RIGHT = EMPTY.copy(); RIGHT[:, 20:] = 1
CASES = {  # name: (gt, pred, IoU with true_pos_only=True, with False)
    'both empty': (EMPTY, EMPTY, np.nan, np.nan),
    'prediction empty': (LEFT, EMPTY, np.nan, 0.0),
    'GT empty': (EMPTY, LEFT, np.nan, 0.0),
    'identical': (LEFT, LEFT, 1.0, 1.0),
    'disjoint': (LEFT, RIGHT, 0.0, 0.0),
}


@pytest.mark.parametrize('true_pos_only', [True, False])
@pytest.mark.parametrize('case', list(CASES))
def test_iou_edge_cases(case, true_pos_only):
    gt, pred, expect_true, expect_false = CASES[case]
    expected = expect_true if true_pos_only else expect_false
    stack = lambda m: np.broadcast_to(m, (1, len(PATHOLOGIES), H, W))
    assert_array_equal(iou_masks(stack(gt), stack(pred), true_pos_only), np.full((1, 10), expected))
    seg = lambda m: {'p1': {p: encode(m) for p in PATHOLOGIES}}
    assert_array_equal(iou_table(seg(gt), seg(pred), true_pos_only).to_numpy(), np.full((1, 10), expected))
    assert_array_equal(reference_iou(pred, gt, true_pos_only), expected)


def test_images_missing_from_either_file():
    gt = {'a': {p: encode(LEFT) for p in PATHOLOGIES}, 'b': {p: encode(LEFT) for p in PATHOLOGIES}}
    pred = {'a': {p: encode(LEFT) for p in PATHOLOGIES}, 'c': {p: encode(RIGHT) for p in PATHOLOGIES}}
    with pytest.warns(UserWarning, match='1 of 2 ground-truth images have no prediction'):
        t = iou_table(gt, pred, true_pos_only=True)
    assert list(t.index) == ['a', 'b'] and t.loc['a'].eq(1).all() and t.loc['b'].isna().all()
    with pytest.warns(UserWarning):
        t = iou_table(gt, pred, true_pos_only=False)
    assert list(t.index) == ['a', 'b', 'c'] and t.loc[['b', 'c']].eq(0).all().all()


# ---- bootstrap ------------------------------------------------------------------------------------------------

def random_table(seed=0, n=150):
    rng = np.random.default_rng(seed)
    v = rng.beta(2, 3, size=(n, 10)); v[rng.random((n, 10)) < 0.3] = np.nan
    return pd.DataFrame(v, columns=list(PATHOLOGIES), index=pd.Index([f'id{i}' for i in range(n)], name='cxr_id'))


def test_bootstrap_is_deterministic_and_holds_the_estimate():
    t = random_table()
    b = bootstrap_miou(t, n=1000, seed=3)
    pd.testing.assert_frame_equal(b, bootstrap_miou(t, n=1000, seed=3))
    assert not b.equals(bootstrap_miou(t, n=1000, seed=4))
    assert_array_equal(b['estimate'].to_numpy(), miou(t).to_numpy())           # the point estimate, not a bootstrap mean
    assert ((b.lower <= b.estimate) & (b.estimate <= b.upper)).all() and (b.lower < b.upper).all()


def test_bootstrap_replicates_match_a_naive_loop():
    t, n, seed = random_table(n=40), 50, 7
    idx = np.random.default_rng(seed).integers(0, len(t), size=(n, len(t)))   # the draws bootstrap_replicates makes
    naive = np.array([[*t.iloc[i].mean(), t.iloc[i].mean().mean()] for i in idx])
    np.testing.assert_allclose(bootstrap_replicates(t, n, seed), naive, rtol=1e-12)
    reps = bootstrap_replicates(t, n, seed)
    np.testing.assert_allclose(bootstrap_miou(t, n, seed)['lower'], np.nanpercentile(reps, 2.5, axis=0))


def test_paired_bootstrap():
    t = random_table()
    assert_array_equal(paired_bootstrap(t, t).to_numpy(), np.zeros((11, 3)))
    shuffled = t.sample(frac=1, random_state=0)                                 # rows are matched by id, not position
    assert_array_equal(paired_bootstrap(t, shuffled).to_numpy(), np.zeros((11, 3)))
    d = paired_bootstrap(t + 0.05, t)
    np.testing.assert_allclose(d.to_numpy(), 0.05, atol=1e-12)
    with pytest.raises(ValueError, match='same images'): paired_bootstrap(t, t.iloc[1:])


# ---- pooled IoU and pointing game -----------------------------------------------------------------------------

def test_pooled_iou_masks_and_rles_agree():
    rng = np.random.default_rng(0)
    gt = np.stack([[random_mask(rng) for _ in PATHOLOGIES] for _ in range(6)])
    pred = np.stack([[random_mask(rng) for _ in PATHOLOGIES] for _ in range(6)])
    from_masks = pooled_iou(gt, pred)
    inter, union = (gt & pred).sum((0, 2, 3)), (gt | pred).sum((0, 2, 3))
    with np.errstate(invalid='ignore'): assert_array_equal(from_masks[list(PATHOLOGIES)].to_numpy(), inter / union)
    seg = lambda ms: {f'i{k}': {p: encode(m) for p, m in zip(PATHOLOGIES, masks)} for k, masks in enumerate(ms)}
    assert_array_equal(pooled_iou(seg(gt), seg(pred)).to_numpy(), from_masks.to_numpy())


def test_pointing_game_matches_a_loop():
    rng = np.random.default_rng(0)
    gt = np.stack([[random_mask(rng) for _ in PATHOLOGIES] for _ in range(5)])
    sal = rng.random(gt.shape)
    expected = np.full(gt.shape[:2], np.nan)
    for i in range(gt.shape[0]):
        for j in range(gt.shape[1]):
            x, y = np.unravel_index(np.argmax(sal[i, j]), sal[i, j].shape)
            if gt[i, j, x, y] == 1: expected[i, j] = 1
            elif gt[i, j].sum() > 0: expected[i, j] = 0
    assert_array_equal(pointing_hits(sal, gt), expected)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert_array_equal(hit_rate(sal, gt)[list(PATHOLOGIES)].to_numpy(), np.nanmean(expected, 0))


# ---- the console script ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('flag', ['True', 'False'])
def test_chexseg_eval_end_to_end(tmp_path, flag):
    gt_path, pred_path = random_files(tmp_path)
    out = tmp_path / 'out'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        chexseg_eval(['--gt', str(gt_path), '--pred', str(pred_path), '--out', str(out), '--true_pos_only', flag])
    ref = reference_ious(gt_path, pred_path, flag == 'True')
    per_image = pd.read_csv(out / 'iou_per_image.csv', index_col='cxr_id', dtype=str).astype(float)   # exact parse
    assert list(per_image.columns) == list(PATHOLOGIES) and list(per_image.index) == list(ref['img_id'])
    assert_array_equal(per_image.to_numpy(), ref[list(PATHOLOGIES)].to_numpy())
    summary = pd.read_csv(out / 'miou_summary.csv', index_col='pathology', dtype=str).astype(float)   # exact parse
    assert list(summary.index) == [*PATHOLOGIES, 'mean']
    assert list(summary.columns) == ['miou', 'miou_lower', 'miou_upper', 'n_images', 'pooled_iou']
    assert_array_equal(summary.loc[list(PATHOLOGIES), 'miou'].to_numpy(), ref[list(PATHOLOGIES)].mean().to_numpy())
    assert json.loads((out / 'eval_settings.json').read_text())['true_pos_only'] is (flag == 'True')
    assert sorted(p.name for p in out.iterdir()) == ['eval_settings.json', 'iou_per_image.csv', 'miou_summary.csv']


def test_console_script_parses_false(tmp_path):
    gt_path, pred_path = random_files(tmp_path)
    r = subprocess.run(['chexseg_eval', '--gt_path', str(gt_path), '--pred_path', str(pred_path), '--save_dir',
                        str(tmp_path / 'out'), '--true_pos_only', 'False', '--n_boot', '10'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    per_image = pd.read_csv(tmp_path / 'out' / 'iou_per_image.csv', index_col='cxr_id')
    assert len(per_image) == 30                                                 # pred-only images included: False was False


@pytest.mark.filterwarnings('ignore:.*have no prediction')
def test_chexseg_eval_errors(tmp_path, capsys):
    gt_path, pred_path = random_files(tmp_path)
    (tmp_path / 'bad.json').write_text('{"p1": {"Edema": ')
    with pytest.raises(SystemExit) as e:
        chexseg_eval(['--gt', str(gt_path), '--pred', str(tmp_path / 'bad.json'), '--out', str(tmp_path / 'o')])
    assert e.value.code == 2 and 'bad.json' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        chexseg_eval(['--gt', str(gt_path), '--pred', str(pred_path), '--out', str(tmp_path / 'o'), '--true_pos_only', 'Flase'])
    assert "expected True or False, got 'Flase'" in capsys.readouterr().err
    first_gt_id = sorted(json.loads(gt_path.read_text()))[0]
    small = {first_gt_id: {p: encode(np.zeros((H, W + 1))) for p in PATHOLOGIES}}
    (tmp_path / 'small.json').write_text(json.dumps(small))
    with pytest.raises(SystemExit):
        chexseg_eval(['--gt', str(gt_path), '--pred', str(tmp_path / 'small.json'), '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    assert "predictions must be at the original image resolution" in err and f"small.json against {gt_path}" in err
    assert not (tmp_path / 'o').exists()
