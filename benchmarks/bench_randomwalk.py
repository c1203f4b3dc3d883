"""IRNet's random walk: chexseg's local neighbour iteration vs the dense N x N matrix power, same inputs.

Both settings are timed on 64x64 maps with 10 classes (fp32): CheXseg's (beta 5, exp_times 3, r 3; the
project's default, whose ratio is the `RATIO:` line) and IRNet's (beta 10, exp_times 8, r 5). The local walk
runs a batch of `--n` images at once (best of 3 runs); the dense reference runs one image at a time on the
first `--dense_n` of them (best image), and the results on those images are checked to agree. Times are per
image; on a shared CPU both suffer from other load, the many small operations of the local walk more so.
With CUDA, the same comparison runs at 128x128, followed by the throughput of the whole inference
(boundary network + walk + masks) at `--image_size`.

    python benchmarks/bench_randomwalk.py [--n 8] [--dense_n 2] [--size 64]
"""
import argparse, time

import torch

from chexseg.core import get_device, seed_everything
from chexseg.irnet import IRNet, WALK_SETTINGS, CamDataset, maps_to_masks, propagate, propagate_dense, refine_cams


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(fn, device):
    "Result and seconds of `fn()`."
    _sync(device); t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def walk_inputs(n: int, size: int, device, seed: int = 0):
    "Random boundary probabilities [n,1,S,S] (mostly low, some high) and CAMs [n,10,S,S], fp32."
    g = torch.Generator().manual_seed(seed)
    boundary = torch.rand(n, 1, size, size, generator=g) ** 4
    cams = torch.rand(n, 10, size, size, generator=g)
    return cams.to(device), boundary.to(device)


def compare(size: int, n: int, dense_n: int, device, repeats: int = 3) -> dict:
    "Per-image seconds of the local and the dense walk for each setting, and their largest relative difference."
    cams, boundary = walk_inputs(n, size, device)
    propagate(cams[:1], boundary[:1], **WALK_SETTINGS['chexseg'])     # warm-up
    rows = {}
    for name, setting in WALK_SETTINGS.items():
        runs = [timed(lambda: propagate(cams, boundary, **setting), device) for _ in range(repeats)]
        local, t_local = runs[0][0], min(t for _, t in runs) / n
        runs = [timed(lambda: propagate_dense(cams[i:i + 1], boundary[i:i + 1], **setting), device) for i in range(dense_n)]
        dense, t_dense = torch.cat([d for d, _ in runs]), min(t for _, t in runs)
        diff = float((local[:dense_n] - dense).abs().max() / dense.abs().max())
        rows[name] = dict(local=t_local, dense=t_dense, diff=diff)
        print(f"{size}x{size}, 10 classes, {name} (beta {setting['beta']}, exp_times {setting['exp_times']}, "
              f"r {setting['radius']}): local {t_local * 1e3:.1f} ms/img (batch of {n}, best of {repeats}), dense "
              f"{t_dense * 1e3:.1f} ms/img (best of {dense_n} images), ratio {t_dense / t_local:.0f}x, "
              f"max relative difference {diff:.1e}")
        assert diff < 1e-3, f"local and dense walks disagree ({diff:.1e})"
    return rows


def inference_throughput(image_size: int, batch: int, device) -> None:
    "Images per second of the whole inference (boundary + walk + masks) for each walk setting."
    seed_everything(0)
    model = IRNet().eval()
    positive = torch.rand(batch, 10) < 0.3
    ds = CamDataset(torch.rand(batch, 1, image_size, image_size), torch.rand(batch, 10, image_size // 32, image_size // 32), positive)
    refine_cams(model, ds, 'chexseg', batch, device)     # warm-up
    for name in WALK_SETTINGS:
        _, t = timed(lambda: maps_to_masks(refine_cams(model, ds, name, batch, device), positive, 0.6, size=image_size), device)
        print(f"whole inference, {name}, {image_size}x{image_size}, batch {batch}: {batch / t:.1f} img/s "
              f"(inputs from and maps back to the CPU included)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=8, help='images in the local batch')
    p.add_argument('--dense_n', type=int, default=2, help='images for the dense reference (one at a time)')
    p.add_argument('--size', type=int, default=64, help='side of the walk maps')
    p.add_argument('--image_size', type=int, default=320, help='image side for the whole-inference throughput (CUDA)')
    p.add_argument('--device', default=None)
    args = p.parse_args(argv)
    device = get_device(args.device)
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'})")
    rows = compare(args.size, args.n, min(args.dense_n, args.n), device)
    if device.type == 'cuda':             # on a GPU the ratio is reported at 128x128, where a batch fills the device
        rows = compare(128, 32, 2, device)
        inference_throughput(args.image_size, 32, device)
    else:
        print("128x128 and whole-inference img/s: skipped (no CUDA device)")
    r = rows['chexseg']
    side = 128 if device.type == 'cuda' else args.size
    print(f"{side}x{side} maps:")
    print(f"local (chexseg setting): {r['local'] * 1e3:.2f} ms/img")
    print(f"dense (chexseg setting): {r['dense'] * 1e3:.2f} ms/img")
    print(f"irnet setting ratio: {rows['irnet']['dense'] / rows['irnet']['local']:.1f}")
    print(f"RATIO: {r['dense'] / r['local']:.1f}")


if __name__ == '__main__':
    main()
