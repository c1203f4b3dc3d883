"""Run every chexseg benchmark, each in its own process, and record their ratios in `benchmarks/RESULTS.md`.

Each benchmark measures the project's code against a baseline side by side in one run and prints `RATIO: x`.
This script runs them one after another (so none shares the device with another), keeps their full output, and
writes (after each benchmark, so a run stopped part-way keeps what finished) one Markdown section per device (its name, torch version, date, commit) into RESULTS.md, replacing an
older section of the same device and keeping the others: the CPU table and the GPU table live side by side.

    python benchmarks/run_all.py [--quick] [--only eval gradcam ...] [--results benchmarks/RESULTS.md] [--log DIR]
"""
import argparse, datetime, os, re, subprocess, sys, time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from chexseg.core import atomic_write, device_name, get_device, git_commit

# name: (script, what the ratio compares, goal, extra args on CUDA, extra args on the CPU)
BENCHMARKS = {
    'eval': ('bench_eval.py', 'CheXlocalize IoU on RLEs (pycocotools) vs decode-then-numpy per pair', '> 1',
             [], ['--n_images', '200', '--baseline_pairs', '200']),
    'gradcam': ('bench_gradcam.py', 'batched Grad-CAM, 10 classes per pass, vs pytorch-grad-cam per class', '> 1',
                [], ['--batch', '8', '--size', '320', '--rounds', '1']),
    'randomwalk': ('bench_randomwalk.py', "IRNet random walk: local iteration vs dense matrix power (CheXseg setting)", '>= 100',
                   [], []),
    'phantom': ('bench_phantom.py', 'phantom generation vs DeepLabV3+ R18 training, img/s at 320 px', '> 1 (data never the bottleneck)',
                [], ['--repeats', '1']),
    'segmenter': ('bench_segmenter.py', "segmenter training: chexseg's loop (data, mixing, loss, step) vs bare model step", '>= 0.9 on a GPU',
                  [], ['--steps', '3']),
    'stacked': ('bench_stacked.py', "3 segmenter trainings at once (fit_stacked: torch.func.vmap over stacked weights) vs one after another (fit), img/s",
                '>= 1.15 on a GPU (gpu_lease.sh STACK=auto then stacks the trials)', [], []),
    'notebook': ('bench_notebook.py', "one 04_semi run in a fresh kernel: the whole notebook vs the drivers' copy without examples "
                 "(RATIO); 3 runs each in a kernel of its own vs in one kept kernel, as a pool's worker runs them (KEPT_RATIO)", '> 1',
                 [], ['--rounds', '2']),
}


def run_one(name: str, cuda: bool, log_dir: Path | None, timeout: int) -> dict:
    "Run benchmark `name`; return its ratio lines, wall time and output."
    script, what, goal, gpu_args, cpu_args = BENCHMARKS[name]
    cmd = [sys.executable, str(HERE/script), *(gpu_args if cuda else cpu_args)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED='1'))
        out, ok = p.stdout + p.stderr, p.returncode == 0
    except subprocess.TimeoutExpired as e:
        out, ok = f"{e.stdout or ''}\n{e.stderr or ''}\nTIMEOUT after {timeout} s", False
    wall = time.perf_counter() - t0
    if log_dir is not None: (log_dir/f'bench_{name}.log').write_text(out if isinstance(out, str) else str(out))
    ratios = re.findall(r'^([A-Z_]*RATIO): *([-\d.e+]+)(.*)$', out, flags=re.M)
    print(f"[{name}] {'ok' if ok else 'FAILED'} in {wall:.0f} s: " + '; '.join(f"{k} {v}{rest}" for k, v, rest in ratios), flush=True)
    return dict(name=name, what=what, goal=goal, ok=ok, wall=wall, ratios=ratios, args=' '.join(cmd[2:]),
                tail='' if ok else out[-600:])


def section(results: list, device: str, commit: str) -> str:
    "The Markdown section of one run on `device` at `commit`."
    head = (f"## {device}\n\ntorch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"commit {commit}, {os.cpu_count()} CPU cores\n\n| benchmark | ratio | compares | goal | args | wall s |\n|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        ratio = '<br>'.join(f"{k} {v}{rest}".strip() for k, v, rest in r['ratios']) if r['ok'] else 'FAILED: ' + \
            r['tail'].strip().splitlines()[-1].replace('|', '/') if r['tail'].strip() else 'FAILED'
        rows.append(f"| {r['name']} | {ratio} | {r['what']} | {r['goal']} | `{r['args'] or 'defaults'}` | {r['wall']:.0f} |")
    return head + '\n'.join(rows) + '\n'


def merge(path: Path, device: str, new: str) -> str:
    "RESULTS.md with the section of `device` replaced by `new` (others kept)."
    text = path.read_text() if path.exists() else ''
    title = '# chexseg benchmarks\n\nWritten by `python benchmarks/run_all.py`; one section per device, each measured in one run.\n\n'
    parts = [p for p in re.split(r'(?m)^(?=## )', text) if p.startswith('## ') and not p.startswith(f'## {device}\n')]
    return title + ''.join(sorted(parts + [new + '\n'], key=lambda s: s.splitlines()[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', nargs='+', choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument('--results', default=str(HERE/'RESULTS.md'))
    ap.add_argument('--log', default=None, help='folder for each benchmark\'s full output')
    ap.add_argument('--timeout', type=int, default=600, help='seconds per benchmark')
    a = ap.parse_args()
    device = get_device(); cuda = device.type == 'cuda'
    name = device_name(device)
    log_dir = Path(a.log) if a.log else None
    if log_dir: log_dir.mkdir(parents=True, exist_ok=True)
    results, commit = [], git_commit()          # before the table is rewritten: that would mark the tree dirty
    for n in a.only:      # the table is rewritten after each benchmark: a run stopped part-way keeps the finished rows
        results.append(run_one(n, cuda, log_dir, a.timeout))
        new = section(results, name, commit)
        with atomic_write(Path(a.results)) as f: f.write(merge(Path(a.results), name, new))
    print(new)


if __name__ == '__main__': main()
