"""Segmenter training throughput: the project's loop (expert and weak phantom sets rendered once into device-resident
memory as the experiment does, p-mixing, batch gather, Dice loss, Adam step, all through chexseg.train.fit) against
the bare model step on one device-resident random batch, in the same process.

Goal on a GPU: the loop reaches >= 90% of the bare step (the input pipeline never starves the GPU).
On CUDA it also prints CUDNN_RATIO: the bare step with cuDNN free to time and pick its convolutions (what
chexseg.core.seed_everything sets) over the bare step restricted to cuDNN's deterministic convolutions.
Usage: python benchmarks/bench_segmenter.py [--size 320 512] [--batch 16] [--steps 100]"""
import argparse, time
import torch
from chexseg.core import autocast, device_name, get_device, seed_everything, to_device
from chexseg.phantom import PhantomDataset
from chexseg.semi import MixedDataset, build_segmenter, dice_step, in_memory, soft_dice_loss
from chexseg.train import fit


def bare_steps(model, device, size, batch, steps):
    "Images per second of forward + Dice + backward + Adam on one fixed random batch already on the device."
    x = torch.rand(batch, 1, size, size, device=device); y = (torch.rand(batch, 10, size, size, device=device) > .9).float()
    if device.type == 'cuda': x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    def step():
        with autocast(device): loss = soft_dice_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    step(); sync(device)
    t = time.perf_counter()
    for _ in range(steps): step()
    sync(device)
    return batch * steps / (time.perf_counter() - t)


def loop_steps(model, device, size, batch, steps, pool=64):
    "Images per second of chexseg.train.fit on p=0.9 expert/weak-mixed phantom data held on the device."
    expert = in_memory(PhantomDataset(pool, size=size, seed=0, start=0), device)
    weak = in_memory(PhantomDataset(pool, size=size, seed=0, start=10_000), device)
    data = MixedDataset(expert, weak, 0.9, length=2 * pool)
    fit(model, data, dice_step, steps=1, batch_size=batch, lr=1e-3, device=device)   # warm-up
    sync(device); t = time.perf_counter()
    fit(model, data, dice_step, steps=steps, batch_size=batch, lr=1e-3, device=device, seed=1)
    sync(device)
    return batch * steps / (time.perf_counter() - t)


def cudnn_ratio(device, size, batch, steps):
    "Bare-step img/s with cuDNN's timed choice of convolutions over its deterministic ones only, each on a fresh model."
    rates = {}
    for deterministic in (True, False):
        seed_everything(0, deterministic)
        rates[deterministic] = bare_steps(to_device(build_segmenter(), device), device, size, batch, steps)
    return rates[False] / rates[True]


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--size', type=int, nargs='+', default=None)
    ap.add_argument('--batch', type=int, default=16); ap.add_argument('--steps', type=int, default=None)
    a = ap.parse_args(); device = get_device()
    sizes = a.size or ([320, 512] if device.type == 'cuda' else [128])
    steps = a.steps or (100 if device.type == 'cuda' else 3)   # the fixed costs of a fit call (once per 300-step trial in the runs) weigh less than over 30
    print(f"device: {device_name(device)}, torch {torch.__version__}, batch {a.batch}, {steps} steps")
    for size in sizes:
        seed_everything(0)      # cuDNN as every training of chexseg sets it
        bare = bare_steps(to_device(build_segmenter(), device), device, size, a.batch, steps)
        loop = loop_steps(build_segmenter(), device, size, a.batch, steps)
        print(f"{size}px: bare step {bare:.1f} img/s, chexseg loop {loop:.1f} img/s")
        print(f"RATIO: {loop / bare:.3f}  (loop / bare at {size}px; goal >= 0.9 on a GPU)")
        if device.type == 'cuda':
            print(f"CUDNN_RATIO: {cudnn_ratio(device, size, a.batch, steps):.3f}  (bare step, cudnn.benchmark / cudnn.deterministic at {size}px)")
