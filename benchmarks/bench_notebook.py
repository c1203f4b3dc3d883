"""One run of 04_semi through papermill as the drivers execute it (without the examples) against the whole notebook.

Usage: python benchmarks/bench_notebook.py [--scale smoke] [--rounds 1] [--device cpu|cuda]
Runs the same run (its upstream stages cached by a first, untimed run; its segmenters trained afresh each time) from
both copies in fresh kernels, one after the other, and prints each one's wall time, the seconds saved per kernel and
RATIO = whole notebook / runnable copy. The saving is a fixed number of seconds per kernel (the sweep and the encoder
study start dozens), so the ratio is largest at the smoke scale and shrinks as a run's training grows.
"""
import argparse, shutil, tempfile, time
from pathlib import Path

import papermill as pm

from chexseg.core import device_name, get_device
from chexseg.sweep import runnable_copy, semi_notebook

def run(nb: Path, root: Path, out: Path, params: dict) -> float:
    "Seconds to execute `nb` in a fresh kernel with `params`, results into `out`, its segmenters not cached."
    shutil.rmtree(out, ignore_errors=True); shutil.rmtree(root/'runs'/'segmenter', ignore_errors=True)
    t = time.perf_counter()
    pm.execute_notebook(str(nb), str(root/'executed.ipynb'), parameters=dict(params, out_dir=str(out)), cwd=str(semi_notebook().parent),
                        kernel_name='python3', progress_bar=False)
    return time.perf_counter() - t

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--scale', default='smoke'); p.add_argument('--rounds', type=int, default=1); p.add_argument('--device')
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix='bench-notebook-'))
    params = dict(scale=a.scale, root=str(root/'runs'), device=a.device, p=0.9)
    copies = dict(whole=semi_notebook(), runnable=runnable_copy('04_semi.ipynb'))
    run(copies['runnable'], root, root/'warm', params)          # classifier, maps, weak masks: cached for both
    times = {k: [] for k in copies}
    for _ in range(a.rounds):
        for k, nb in copies.items():
            times[k].append(run(nb, root, root/f'out_{k}', params))
    shutil.rmtree(root, ignore_errors=True)
    whole, lean = (min(times[k]) for k in ('whole', 'runnable'))
    print(f"device: {device_name(get_device(a.device))}, scale {a.scale}, best of {a.rounds}")
    print(f"whole notebook: {whole:.1f} s; without its examples: {lean:.1f} s; saved per kernel: {whole - lean:.1f} s")
    print(f"RATIO: {whole / lean:.2f}")

if __name__ == '__main__': main()
