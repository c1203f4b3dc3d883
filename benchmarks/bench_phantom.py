"""Phantom generation speed against DeepLabV3+ ResNet18 training speed, same process, same device, 320x320.

Usage: python benchmarks/bench_phantom.py [--device cpu|cuda] [--batch 16] [--size 320] [--threads N]
Prints both speeds in images per second and RATIO = generation / training (above 1: data is not the bottleneck).
"""
import argparse, time

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from chexseg.core import autocast, device_name, get_device, to_device
from chexseg.phantom import render_batch

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def timed(fn, device, repeats: int) -> float:
    "Seconds per call of `fn` after one warm-up call."
    fn(); sync(device)
    t = time.perf_counter()
    for _ in range(repeats): fn()
    sync(device)
    return (time.perf_counter() - t) / repeats

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default=None)
    p.add_argument('--batch', type=int, default=None, help='default: 16 on the CPU, 256 on CUDA (generation)')
    p.add_argument('--train_batch', type=int, default=None, help='default: 4 on the CPU, 16 on CUDA')
    p.add_argument('--size', type=int, default=320)
    p.add_argument('--repeats', type=int, default=None)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s choice)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    device = get_device(a.device)
    cuda = device.type == 'cuda'
    gen_batch, train_batch = a.batch or (256 if cuda else 16), a.train_batch or (16 if cuda else 4)
    repeats = a.repeats or (10 if cuda else 2)
    offset = [0]
    def generate():                                  # fresh films each call: nothing cached
        render_batch(0, range(offset[0], offset[0] + gen_batch), a.size, device=device); offset[0] += gen_batch
    gen = gen_batch / timed(generate, device, repeats)
    model = to_device(smp.DeepLabV3Plus('resnet18', encoder_weights=None, in_channels=1, classes=10), device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(train_batch, 1, a.size, a.size, device=device)
    y = (torch.rand(train_batch, 10, a.size, a.size, device=device) > 0.9).float()
    if cuda: x = x.contiguous(memory_format=torch.channels_last)
    def step():
        with autocast(device): loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    train = train_batch / timed(step, device, repeats)
    print(f"device: {device_name(device)}, torch threads: {torch.get_num_threads()}, size {a.size}x{a.size}")
    print(f"phantom generation: {gen:.1f} img/s (batch {gen_batch})")
    print(f"DeepLabV3+ ResNet18 training: {train:.1f} img/s (batch {train_batch}{', bf16 + channels_last' if cuda else ''})")
    print(f"RATIO: {gen / train:.2f}")

if __name__ == '__main__': main()
