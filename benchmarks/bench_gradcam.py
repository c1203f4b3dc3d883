"""Grad-CAM throughput: chexseg.saliency.gradcam (all 10 pathologies from one forward pass) against pytorch-grad-cam
(one forward + backward per class) on the same DenseNet121 (random weights) and batch, in this process.
Also, on CUDA only, the classifier's training throughput with bf16 autocast + channels_last against plain fp32.

    python benchmarks/bench_gradcam.py [--batch 32] [--size 320] [--baseline_images N]

The baseline is slow on a CPU, so there it runs on the first `--baseline_images` images of the batch (default 4 on the
CPU, the whole batch on a GPU); throughputs are images per second either way. The methods are timed in interleaved
rounds and the best round of each is kept, so that a machine shared with other work loads them alike.
Prints `RATIO: x` (ours / baseline).
"""
import argparse, time

import torch

from chexseg.core import PATHOLOGIES, autocast, get_device, seed_everything, to_device
from chexseg.classifier import Classifier, classifier_loss, label_columns
from chexseg.saliency import gradcam, reference_gradcam, upsample_maps


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def interleaved(fns: dict, device, rounds: int) -> tuple[dict, dict]:
    "Best wall time of each `fn(x)` over `rounds` rounds that call them in turn, and their results."
    best, out = {k: float('inf') for k in fns}, {}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync(device); t = time.perf_counter(); out[k] = fn(); sync(device)
            best[k] = min(best[k], time.perf_counter() - t)
    return best, out


def ours(model, x, method):
    cams = gradcam(model, x, method).cams
    return upsample_maps(cams, x.shape[-2:])          # same output as the baseline: upsampled, normalised, per map


def bench_gradcam(args, device):
    seed_everything(0)
    model = to_device(Classifier('densenet121'), device).eval()
    x = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    nb = args.baseline_images or (args.batch if device.type == 'cuda' else min(4, args.batch))
    ours(model, x, 'closed'); ours(model, x, 'autograd'); reference_gradcam(model, x[:nb])   # warm-up at the timed shapes
    fns = {'closed': lambda: ours(model, x, 'closed'), 'autograd': lambda: ours(model, x, 'autograd'),
           'reference': lambda: reference_gradcam(model, x[:nb])}
    times, out = interleaved(fns, device, args.rounds)
    t_closed, t_autograd, t_ref = times['closed'], times['autograd'], times['reference']
    maps, maps_ag, ref = out['closed'], out['autograd'], out['reference']
    diff = (maps[:nb].cpu() - ref).abs()
    ag_diff = (maps - maps_ag).abs().max().item()
    closed_ips, autograd_ips, ref_ips = args.batch / t_closed, args.batch / t_autograd, nb / t_ref
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'})")
    print(f"DenseNet121, {len(PATHOLOGIES)} pathologies, batch {args.batch} at {args.size}x{args.size}, random weights")
    print(f"chexseg closed form   : {t_closed:8.3f} s / {args.batch} images = {closed_ips:8.1f} img/s")
    print(f"chexseg batched grad  : {t_autograd:8.3f} s / {args.batch} images = {autograd_ips:8.1f} img/s  "
          f"(max abs diff to closed form {ag_diff:.1e})")
    print(f"pytorch-grad-cam      : {t_ref:8.3f} s / {nb} images = {ref_ips:8.1f} img/s  (10 forward+backward passes"
          f"{'; baseline on the first %d images only' % nb if nb < args.batch else ''})")
    print(f"maps vs pytorch-grad-cam: max abs diff {diff.max().item():.2e}, mean {diff.mean().item():.2e}")
    if device.type == 'cpu': assert diff.max().item() <= 1e-4, "maps disagree with pytorch-grad-cam"
    else: assert diff.mean().item() <= 2e-2, "maps disagree with pytorch-grad-cam (bf16 backbone on CUDA)"
    print(f"RATIO: {closed_ips / ref_ips:.1f}")


def bench_training(args, device):
    if device.type != 'cuda':
        print("skip: classifier training throughput (bf16 + channels_last vs fp32) runs only on CUDA"); return
    batch, steps = 16, 10
    x = torch.rand(batch, 1, args.size, args.size, device=device)
    item = {'image': x, 'labels': (torch.rand(batch, 14, device=device) > 0.5).float(), 'label_weights': torch.ones(batch, 14, device=device)}
    results = {}
    for name, fast in (('fp32', False), ('bf16+channels_last', True)):
        seed_everything(0)
        model = Classifier('densenet121')
        model = to_device(model, device) if fast else model.to(device)
        opt, cols = torch.optim.Adam(model.parameters(), lr=1e-4), label_columns(model.class_names)
        def step():
            with (autocast(device) if fast else torch.autocast('cuda', enabled=False)):
                loss = classifier_loss(model, item, cols)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        for _ in range(3): step()
        sync(device); t = time.perf_counter()
        for _ in range(steps): step()
        sync(device); results[name] = batch * steps / (time.perf_counter() - t)
        print(f"training DenseNet121 batch {batch} at {args.size}: {name:20s} {results[name]:8.1f} img/s")
    print(f"TRAIN_RATIO: {results['bf16+channels_last'] / results['fp32']:.2f}")


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=320)
    p.add_argument('--baseline_images', type=int, default=None)
    p.add_argument('--rounds', type=int, default=2, help='timed rounds (best kept), after a one-image warm-up')
    p.add_argument('--device', default=None)
    args = p.parse_args()
    device = get_device(args.device)
    bench_gradcam(args, device)
    bench_training(args, device)
