"""Several small segmenter trainings at once: the k segmenters of a run's trials trained by chexseg.train.fit_stacked
(their weights stacked, torch.func.vmap: one forward, backward and Adam step for all k, their convolutions run as
grouped ones) against the same k trained one after another by chexseg.train.fit, each on its own device-resident
set, images per second, in the same process. This is the choice `--stack_trials` makes in the drivers.

The drivers train the trials of a run one after another by default and share the GPU between notebook kernels
(processes, which the GPU time-slices); a batch of 8 at 320 px leaves most of an H100/H200 idle. benchmarks/gpu_lease.sh
runs this first and stacks the trials only where the ratio is at least 1.15. It also checks that the stacked models
train as the separate ones do: the same losses, step by step (dropout off for that check).

Usage: python benchmarks/bench_stacked.py [--k 3] [--size 320] [--batch 8] [--steps 20]"""
import argparse, time
import torch
from chexseg.core import device_name, get_device
from chexseg.semi import MaskSet, batch_dice, build_segmenter, dice_step
from chexseg.train import fit, fit_stacked


def segmenters(k: int, dropout: float | None = None) -> list:
    "`k` segmenters, model i drawn with seed i; with `dropout`, their dropout probability set to it."
    models = []
    for i in range(k):
        torch.manual_seed(i); models.append(build_segmenter())
        for layer in (l for l in models[-1].modules() if isinstance(l, torch.nn.Dropout) and dropout is not None): layer.p = dropout
    return models


def datasets(device, k: int, size: int, n: int = 32) -> list:
    "`k` sets of `n` random images and sparse masks, held on `device` as the experiment holds its films."
    g = torch.Generator().manual_seed(0)
    return [MaskSet(torch.rand(n, 1, size, size, generator=g), (torch.rand(n, 10, size, size, generator=g) > .9).to(torch.uint8)).to(device)
            for _ in range(k)]



def one_after_another(models, sets, device, batch, steps) -> list[list[float]]:
    return [fit(m, d, dice_step, steps=steps, batch_size=batch, lr=1e-3, seed=i, device=device) for i, (m, d) in enumerate(zip(models, sets))]


def all_at_once(models, sets, device, batch, steps) -> list[list[float]]:
    return fit_stacked(models, sets, batch_dice, steps=steps, batch_size=batch, lr=1e-3, seeds=list(range(len(models))), device=device)


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def images_per_second(train, device, k, size, batch, steps) -> float:
    "Images per second of `train` on fresh models and sets, after a 2-step warm-up (cuDNN picks its algorithms)."
    sets = datasets(device, k, size)
    train(segmenters(k), sets, device, batch, 2); sync(device)
    models = segmenters(k)
    t = time.perf_counter(); train(models, sets, device, batch, steps); sync(device)
    return k * batch * steps / (time.perf_counter() - t)


def max_difference(device, k, size, steps=5) -> float:
    """Largest difference between the per-step losses of the stacked and the separate trainings (dropout off). Their
    gradients agree to rounding (about 1e-4 of the largest, float32); the weights then drift apart a little where a
    gradient is nearly zero, since Adam's first steps move every weight by about the learning rate whatever its size."""
    sets = datasets(device, k, size, n=8)
    alone = one_after_another(segmenters(k, dropout=0.0), sets, device, 2, steps)
    together = all_at_once(segmenters(k, dropout=0.0), sets, device, 2, steps)
    return max(abs(a - t) for la, lt in zip(alone, together) for a, t in zip(la, lt))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--k', type=int, default=3); ap.add_argument('--size', type=int, default=None)
    ap.add_argument('--batch', type=int, default=8); ap.add_argument('--steps', type=int, default=None)
    a = ap.parse_args(); device = get_device()
    size = a.size or (320 if device.type == 'cuda' else 128)
    steps = a.steps or (20 if device.type == 'cuda' else 2)
    print(f"device: {device_name(device)}, torch {torch.__version__}, {a.k} segmenters, batch {a.batch} each, {size}px, {steps} steps")
    print(f"stacked vs separate training, 5 steps, dropout off: largest loss difference {max_difference(device, a.k, 64):.2e}")
    sep = images_per_second(one_after_another, device, a.k, size, a.batch, steps)
    stk = images_per_second(all_at_once, device, a.k, size, a.batch, steps)
    print(f"one after another (fit) {sep:.1f} img/s, stacked (fit_stacked) {stk:.1f} img/s")
    print(f"RATIO: {stk / sep:.3f}  (stacked / one after another, {a.k} x batch {a.batch} at {size}px)")
