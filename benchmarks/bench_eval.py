"""Benchmark: chexseg's IoU evaluation on RLEs vs decoding every mask and counting with numpy (CheXlocalize's loop).

500 images x 10 pathologies of random polygon masks at 2320 x 2828 in CheXlocalize JSON (about half of the
GT masks empty, predictions jittered copies of the GT polygons plus some false positives and misses). Both
evaluations start from the same loaded JSON dicts in this process. The decode loop costs ~15 ms per pair, so it
is timed on a random subset of pairs and extrapolated per pair to the whole file (the output says so); its
values on that subset must equal chexseg's exactly. Mask generation is not timed.

    python benchmarks/bench_eval.py [--n_images 500] [--baseline_pairs 500] [--seed 0]
"""
import argparse, tempfile, time, warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from chexseg.core import PATHOLOGIES
from chexseg.data import read_segmentation_json, write_segmentation_json
from chexseg.metrics import evaluate, iou_table

H, W = 2320, 2828


def random_polygon(rng, center=None, radius=None):
    "A star-shaped polygon (5-12 vertices) as a flat [x0, y0, x1, y1, ...] list, as COCO polygons are stored."
    cx, cy = center if center is not None else (rng.uniform(0, W), rng.uniform(0, H))
    r = radius if radius is not None else rng.uniform(80, 700)
    k = rng.integers(5, 13)
    angles, radii = np.sort(rng.uniform(0, 2 * np.pi, k)), r * rng.uniform(0.5, 1.0, k)
    return np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).ravel().tolist()


def polygons_to_rle(polygons):
    "The union of `polygons` as a CheXlocalize RLE (str counts), rasterised by pycocotools without a full-size array."
    rle = mask_util.merge(mask_util.frPyObjects(polygons, H, W)) if polygons else mask_util.encode(np.zeros((H, W), np.uint8, order='F'))
    return {'size': [H, W], 'counts': rle['counts'].decode()}


def jitter(rng, polygon):
    "A prediction-like copy of a GT polygon: shifted and scaled around its centre."
    xy = np.array(polygon).reshape(-1, 2)
    c = xy.mean(0)
    return ((xy - c) * rng.uniform(0.7, 1.3) + c + rng.normal(0, 60, 2)).ravel().tolist()


def random_pair(rng):
    "GT and predicted polygon lists for one (image, pathology)."
    gt = [random_polygon(rng) for _ in range(rng.integers(1, 4))] if rng.random() < 0.5 else []
    if gt: pred = [] if rng.random() < 0.15 else [jitter(rng, p) for p in gt]
    else: pred = [random_polygon(rng) for _ in range(rng.integers(1, 3))] if rng.random() < 0.3 else []
    return gt, pred


def make_files(directory, n_images, seed):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for i in range(n_images):
        cxr_id = f'patient{64541 + i}_study1_view1_frontal'
        pairs = [random_pair(rng) for _ in PATHOLOGIES]
        gt[cxr_id] = {p: polygons_to_rle(g) for p, (g, _) in zip(PATHOLOGIES, pairs)}
        pred[cxr_id] = {p: polygons_to_rle(q) for p, (_, q) in zip(PATHOLOGIES, pairs)}
    write_segmentation_json(gt, directory / 'gt.json'); write_segmentation_json(pred, directory / 'pred.json')
    return directory / 'gt.json', directory / 'pred.json'


def baseline_iou(gt_rle, pred_rle, true_pos_only):
    "CheXlocalize's per-pair computation: decode both full-resolution masks, then numpy."
    gt_mask, pred_mask = mask_util.decode(gt_rle), mask_util.decode(pred_rle)
    intersection, union = np.logical_and(pred_mask, gt_mask), np.logical_or(pred_mask, gt_mask)
    if true_pos_only:
        if np.sum(pred_mask) == 0 or np.sum(gt_mask) == 0: return np.nan
    elif np.sum(union) == 0: return np.nan
    return np.sum(intersection) / np.sum(union)


def best_time(f, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); times.append(time.perf_counter() - t)
    return min(times), out


def main(n_images=500, baseline_pairs=500, seed=0):
    warnings.filterwarnings('ignore', category=DeprecationWarning)   # pycocotools' decode under numpy 2
    tmp = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    gt_path, pred_path = make_files(tmp, n_images, seed)
    print(f"generated {n_images} images x {len(PATHOLOGIES)} pathologies at {H} x {W} "
          f"({(gt_path.stat().st_size + pred_path.stat().st_size) / 1e6:.1f} MB of JSON) in {time.perf_counter() - t:.1f} s (not timed)")
    t = time.perf_counter()
    gt, pred = read_segmentation_json(gt_path), read_segmentation_json(pred_path)
    print(f"read + validate both JSON files: {time.perf_counter() - t:.2f} s (same input for both methods)")

    ids = sorted(gt)
    n_pairs = len(ids) * len(PATHOLOGIES)
    pick = np.sort(np.random.default_rng(seed).choice(n_pairs, size=min(baseline_pairs, n_pairs), replace=False))
    pairs = [(ids[k // len(PATHOLOGIES)], PATHOLOGIES[k % len(PATHOLOGIES)]) for k in pick]
    ratios = {}
    for tpo in (True, False):
        ours_s, table = best_time(lambda: iou_table(gt, pred, tpo))
        t = time.perf_counter()
        base = np.array([baseline_iou(gt[i][p], pred[i][p], tpo) for i, p in pairs])
        base_per_pair = (time.perf_counter() - t) / len(pairs)
        ours_on_subset = np.array([table.loc[i, p] for i, p in pairs])
        identical = np.array_equal(ours_on_subset, base, equal_nan=True)
        assert identical, f"values differ (true_pos_only={tpo})"
        base_total = base_per_pair * n_pairs
        ratios[tpo] = base_total / ours_s
        print(f"\ntrue_pos_only={tpo}: {n_pairs} (image, pathology) pairs, {int(np.isfinite(table.to_numpy()).sum())} scored, "
              f"overall mIoU {table.mean().mean():.3f}")
        print(f"  chexseg iou_table (RLE, pycocotools): {ours_s:.3f} s = {ours_s / n_pairs * 1e3:.4f} ms/pair (best of 3)")
        print(f"  decode + numpy loop: {base_per_pair * 1e3:.2f} ms/pair measured on {len(pairs)} random pairs, "
              f"extrapolated to {n_pairs} pairs: {base_total:.1f} s")
        print(f"  values identical on the {len(pairs)} baseline pairs: {identical}; ratio {ratios[tpo]:.0f}x")

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        evaluate(gt_path, pred_path, tmp / 'out')
    print(f"\nchexseg_eval end to end (read + validate, IoU, 1000-replicate bootstrap, pooled IoU, CSVs): "
          f"{time.perf_counter() - t:.2f} s")
    print(f"RATIO: {ratios[True]:.0f}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n_images', type=int, default=500)
    ap.add_argument('--baseline_pairs', type=int, default=500)
    ap.add_argument('--seed', type=int, default=0)
    main(**vars(ap.parse_args()))
