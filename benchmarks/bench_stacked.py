"""Several small segmenter trainings at once: k DeepLabV3+ R18 models (a run's trials) stacked into one with torch.func
(vmap over their stacked weights: one forward, backward and Adam step for all k, their convolutions run as grouped
ones) against the same k models stepped one after another, images per second, in the same process.

This measures before building: the drivers train the trials of a run one after another and share the GPU between
notebook kernels (processes, which the GPU time-slices); a batch of 8 at 320 px leaves most of an H100/H200 idle.
If stacking pays on the GPU, the trials of a run can be trained together. It also checks that the stacked models
compute what the separate ones do (dropout off for that check).

Usage: python benchmarks/bench_stacked.py [--k 3] [--size 320] [--batch 8] [--steps 20]"""
import argparse, copy, time
import torch
from torch.func import functional_call, stack_module_state, vmap
from chexseg.core import autocast, device_name, get_device, to_device
from chexseg.semi import build_segmenter, soft_dice_loss


def models_on(device, k: int, dropout: float | None = None) -> list:
    "`k` segmenters (seeded) in training mode on `device`; with `dropout`, their dropout probability set to it."
    torch.manual_seed(0)
    models = [to_device(build_segmenter(), device).train() for _ in range(k)]
    if dropout is not None:
        for layer in (l for m in models for l in m.modules() if isinstance(l, torch.nn.Dropout)): layer.p = dropout
    return models


def stacked(models: list):
    "The models' weights stacked (leaf tensors) and a function of (weights, buffers, x [k,B,1,S,S]) giving their k logits."
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to('meta')
    one = lambda p, b, x: functional_call(skeleton, (p, b), (x,))
    return params, buffers, vmap(one, randomness='different')


def batches(device, k, batch, size):
    x = torch.rand(k, batch, 1, size, size, device=device)
    y = (torch.rand(k, batch, 10, size, size, device=device) > .9).float()
    return x, y


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(step, steps, device) -> float:
    step(); sync(device)                  # warm-up (cuDNN picks its algorithms)
    t = time.perf_counter()
    for _ in range(steps): step()
    sync(device)
    return time.perf_counter() - t


def one_after_another(device, k, batch, size, steps) -> float:
    "Images per second of the k models each taking its own Adam step on its own batch, in turn."
    models, (x, y) = models_on(device, k), batches(device, k, batch, size)
    if device.type == 'cuda': x = [xi.contiguous(memory_format=torch.channels_last) for xi in x]   # a list: stacking would undo it
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in models]
    def step():
        for m, o, xi, yi in zip(models, opts, x, y):
            with autocast(device): loss = soft_dice_loss(m(xi), yi)
            o.zero_grad(); loss.backward(); o.step()
    return k * batch * steps / timed(step, steps, device)


def all_at_once(device, k, batch, size, steps) -> float:
    "Images per second of the k models stacked: one forward and backward of all, one Adam step over the stacked weights."
    params, buffers, forward = stacked(models_on(device, k))
    x, y = batches(device, k, batch, size)
    opt = torch.optim.Adam(params.values(), 1e-3)
    def step():
        with autocast(device):
            out = forward(params, buffers, x)
            loss = sum(soft_dice_loss(out[i], y[i]) for i in range(k))     # each model's gradient is its own loss's
        opt.zero_grad(); loss.backward(); opt.step()
    return k * batch * steps / timed(step, steps, device)


def max_difference(device, k, batch, size) -> float:
    "Largest difference between the stacked models' logits and the separate models' (float32, dropout off)."
    models, (x, _) = models_on(device, k, dropout=0.0), batches(device, k, batch, size)
    params, buffers, forward = stacked(models)
    with torch.no_grad(): return max((forward(params, buffers, x)[i] - m(x[i])).abs().max().item() for i, m in enumerate(models))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--k', type=int, default=3); ap.add_argument('--size', type=int, default=None)
    ap.add_argument('--batch', type=int, default=8); ap.add_argument('--steps', type=int, default=None)
    a = ap.parse_args(); device = get_device()
    size = a.size or (320 if device.type == 'cuda' else 128)
    steps = a.steps or (20 if device.type == 'cuda' else 2)
    print(f"device: {device_name(device)}, torch {torch.__version__}, {a.k} models, batch {a.batch} each, {size}px, {steps} steps")
    print(f"stacked vs separate logits: max difference {max_difference(device, a.k, 2, size):.2e}")
    sep = one_after_another(device, a.k, a.batch, size, steps)
    stk = all_at_once(device, a.k, a.batch, size, steps)
    print(f"one after another {sep:.1f} img/s, stacked {stk:.1f} img/s")
    print(f"RATIO: {stk / sep:.3f}  (stacked / one after another, {a.k} x batch {a.batch} at {size}px)")
