"""One run of 04_semi through papermill as the drivers execute it: without the examples, and in a kernel kept from run to run.

Usage: python benchmarks/bench_notebook.py [--scale smoke] [--rounds 1] [--kept_runs 3] [--device cpu|cuda]
Runs the same run (its upstream stages cached by a first, untimed run; its segmenters trained afresh each time):
- from both copies in fresh kernels, one after the other: each one's wall time, the seconds saved per kernel and
  RATIO = whole notebook / runnable copy;
- `kept_runs` times from the runnable copy as the drivers run it (`chexseg.sweep.execute`), each in a kernel of its
  own, then one after another in one `KeptKernel` (as a pool's worker runs its jobs): KEPT_RATIO = own kernels / kept.
Both savings are a fixed number of seconds per run (the sweep and the encoder study run dozens), so the ratios are
largest at the smoke scale and shrink as a run's training grows.
"""
import argparse, shutil, tempfile, time
from pathlib import Path

import papermill as pm

from chexseg.core import device_name, get_device
from chexseg.sweep import KeptKernel, execute, runnable_copy, semi_notebook

def fresh_segmenters(root: Path, out: Path):
    "Forget the segmenters cached under `root` and the run in `out`, so that the next run trains them again."
    shutil.rmtree(out, ignore_errors=True); shutil.rmtree(root/'runs'/'segmenter', ignore_errors=True)

def run(nb: Path, root: Path, out: Path, params: dict) -> float:
    "Seconds to execute `nb` in a fresh kernel with `params`, results into `out`, its segmenters not cached."
    fresh_segmenters(root, out)
    t = time.perf_counter()
    pm.execute_notebook(str(nb), str(root/'executed.ipynb'), parameters=dict(params, out_dir=str(out)), cwd=str(semi_notebook().parent),
                        kernel_name='python3', progress_bar=False)
    return time.perf_counter() - t

def runs(root: Path, params: dict, n: int, kernel: KeptKernel | None) -> float:
    "Seconds for `n` runs of the drivers' copy one after another, each in `kernel` (None: each in a kernel of its own)."
    total = 0.0
    for k in range(n):
        fresh_segmenters(root, root/f'run{k}')
        t = time.perf_counter()
        execute('04_semi.ipynb', root/f'executed{k}.ipynb', dict(params, out_dir=str(root/f'run{k}')), kernel)
        total += time.perf_counter() - t
    return total

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--scale', default='smoke'); p.add_argument('--rounds', type=int, default=1)
    p.add_argument('--kept_runs', type=int, default=3); p.add_argument('--device')
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix='bench-notebook-'))
    params = dict(scale=a.scale, root=str(root/'runs'), device=a.device, p=0.9)
    copies = dict(whole=semi_notebook(), runnable=runnable_copy('04_semi.ipynb'))
    run(copies['runnable'], root, root/'warm', params)          # classifier, maps, weak masks: cached for both
    times = {k: [] for k in copies}
    for _ in range(a.rounds):
        for k, nb in copies.items():
            times[k].append(run(nb, root, root/f'out_{k}', params))
    own = runs(root, params, a.kept_runs, None)
    with KeptKernel(semi_notebook().parent) as kernel: kept = runs(root, params, a.kept_runs, kernel)
    shutil.rmtree(root, ignore_errors=True)
    whole, lean = (min(times[k]) for k in ('whole', 'runnable'))
    print(f"device: {device_name(get_device(a.device))}, scale {a.scale}, best of {a.rounds}")
    print(f"whole notebook: {whole:.1f} s; without its examples: {lean:.1f} s; saved per kernel: {whole - lean:.1f} s")
    print(f"RATIO: {whole / lean:.2f}")
    print(f"{a.kept_runs} runs, each in a kernel of its own: {own:.1f} s; in one kept kernel: {kept:.1f} s; "
          f"saved per run after the first: {(own - kept) / max(1, a.kept_runs - 1):.1f} s")
    print(f"KEPT_RATIO: {own / kept:.2f}")

if __name__ == '__main__': main()
