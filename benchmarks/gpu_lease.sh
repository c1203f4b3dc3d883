#!/usr/bin/env bash
# The GPU run behind figures/gpu/ and the GPU table of benchmarks/RESULTS.md, sized for one lease of a GPU machine
# that has PyTorch but no network (this workplace's device machines: Python 3.12, torch, timm, pandas, matplotlib...).
#
#   bash benchmarks/gpu_lease.sh wheels     # here, with PyPI: the wheels such a machine lacks into .whl/ (git-ignored)
#   bash benchmarks/gpu_lease.sh run        # there, with .whl/ carried and $OUT set: install them, run the whole paper
#                                           # at the gpu scale, then every benchmark; results packed into $OUT
#   bash benchmarks/gpu_lease.sh bench      # there, likewise: every benchmark alone (a second call on the warm machine
#                                           # after a `run` with BENCH=0 BENCH_S=0 that gave the paper the whole call)
#
# Knobs for `run` (environment): SCALE (gpu), WORKERS (8), LEASE_S (570: the whole call ends by then, inside the
# device's 600 s per command), BENCH_S (180: kept for the benchmarks), PAPER_CAP_S (what is left of LEASE_S after
# installing, BENCH_S and 10 s to stop and pack: the paper run is stopped then, keeping what finished; the summary is
# rewritten after every stage), STAGES (all), SET (sizes over the scale's, as chexseg_paper --set takes them, e.g.
# "steps=200"), STUDENT_STEPS (the distillation students' steps, as chexseg_paper --student_steps; default: their
# teachers'), BENCH (1: run the benchmarks afterwards, stopped at LEASE_S; the table keeps the finished ones),
# RESUME (a runs_done.tgz from an earlier lease, carried: its finished runs are not run again, so two capped leases add
# up to the whole paper), STACK (0: each run trains its trials one after another, the default, since the kernels
# sharing the GPU already keep it busy (99-100% on 4 Dec) and stacking would have to train more images per GPU-second,
# which bench_stacked.py, alone on an idle GPU, does not show; auto: stack if bench_stacked.py, run first for
# 15-20 s, finds stacking at least 15% faster there; 1: always), WORK (.devrun/work: every stage's
# cache; git-ignored, so a second call on the same warm machine carries on from it, the upstream stages and
# distillation weights included). Without .whl/ (a machine that has the packages) nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# What chexseg, papermill's kernels and the Grad-CAM baseline need beyond that machine's packages (resolved for
# Python 3.12; installed without their dependencies, which these complete).
WHEELS=(asttokens==3.0.2 comm==0.2.3 debugpy==1.8.22 entrypoints==0.4.2 executing==2.3.0 fastcore==1.12.47 fastjsonschema==2.22.3
        ipykernel==7.4.0 ipython==9.18.1 ipython_pygments_lexers==1.1.1 jedi==0.20.1
        jsonschema-specifications==2025.9.1 jsonschema==4.26.0 jupyter_client==8.10.0 jupyter_core==5.9.1
        matplotlib-inline==0.2.2 nbclient==0.11.0 nbformat==5.11.1 nest-asyncio2==1.7.4 papermill==2.7.0 parso==0.8.7
        pexpect==4.9.0 platformdirs==4.14.8 prompt_toolkit==3.0.53 ptyprocess==0.7.0 pure_eval==0.2.4 pycocotools==2.0.11
        pyzmq==27.3.0 referencing==0.37.0 rpds-py==2026.9.1 segmentation_models_pytorch==0.6.0 stack-data==0.6.3
        tenacity==9.2.1 tornado==6.6.1 traitlets==5.16.1 ttach==0.0.3 tzdata==2026.6 wcwidth==0.9.4)
PURE_SDISTS=(grad-cam==1.5.7)          # published as source only, pure Python: built into a wheel here

# Progress bars redraw one line with carriage returns, so a line printed after a bar (a stage's "[sweep] ok in ...")
# shares its text: split at every carriage return before dropping the bars' lines, cursor moves and blank lines.
progress_bars_out() { sed -u 's/\r/\n/g; s/\x1b\[A//g' | grep --line-buffered -v -e 'it/s' -e 's/it' -e '^[[:space:]]*$'; }

case "${1:-}" in
wheels)
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
  python3 -m pip wheel -q --no-deps -w .whl "${PURE_SDISTS[@]}"
  git rev-parse --short HEAD > .whl/COMMIT        # the device copy has no .git: its results name this commit
  [ -z "$(git status --porcelain --untracked-files=no -- ':(top,exclude)figures')" ] || sed -i 's/$/+dirty/' .whl/COMMIT
  echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1), for commit $(cat .whl/COMMIT): carry [\".whl\"]"
  ;;
run|bench)
  : "${OUT:?set OUT to the folder the results are packed into}"
  SCALE=${SCALE:-gpu} WORKERS=${WORKERS:-8} LEASE_S=${LEASE_S:-570} BENCH_S=${BENCH_S:-180} BENCH=${BENCH:-1}
  start=$SECONDS
  if compgen -G '.whl/*.whl' > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
  [ -f .whl/COMMIT ] && export CHEXSEG_COMMIT="$(cat .whl/COMMIT)"
  work=${WORK:-$PWD/.devrun/work}
  run_benchmarks() {            # every benchmark, stopped at LEASE_S (the table keeps the finished ones), into $OUT
    left=$((LEASE_S - (SECONDS - start) - 10))
    timeout --signal=INT --kill-after=10 "$left" python3 benchmarks/run_all.py --log "$work/bench" > "$OUT/bench.log" 2>&1 \
      || echo "benchmarks stopped after $left s: exit $?" >> "$OUT/bench.log"
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    tar czf "$OUT/bench_logs.tgz" -C "$work/bench" . 2>/dev/null || true     # each benchmark's own output (its img/s): 8th file
  }
  if [ "$1" = bench ]; then run_benchmarks; grep -a -e '^\[' "$OUT/bench.log"; exit 0; fi
  mkdir -p "$work"
  : > "$OUT/paper.log"
  [ -d "$work/runs" ] && echo "carrying on in $work: $(find "$work/runs" -name results.csv | wc -l) finished runs there" >> "$OUT/paper.log"
  if [ -n "${RESUME:-}" ]; then
    tar xzf "$RESUME" -C "$work"
    echo "resumed $(find "$work/runs" -name results.csv | wc -l) finished runs from $RESUME" >> "$OUT/paper.log"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  (nvidia-smi dmon -s um -d 5 > "$OUT/gpu_util.log" 2>&1 &) || true            # GPU utilisation and memory every 5 s
  STACK=${STACK:-0} stack_flag=''
  if [ "$STACK" = auto ]; then          # the probe's output goes into paper.log: at most 8 files come back
    probe=$(timeout 150 python3 benchmarks/bench_stacked.py 2>&1 | progress_bars_out || true)
    echo "$probe" >> "$OUT/paper.log"
    ratio=$(echo "$probe" | sed -n 's/^RATIO: \([0-9.]*\).*/\1/p')
    STACK=$(python3 -c "import sys; print(int(bool(sys.argv[1]) and float(sys.argv[1] or 0) >= 1.15))" "$ratio")
    echo "stacked trials: bench_stacked RATIO ${ratio:-none} -> STACK=$STACK" >> "$OUT/paper.log"
  fi
  if [ "$STACK" = 1 ]; then stack_flag=--stack_trials; fi
  PAPER_CAP_S=${PAPER_CAP_S:-$((LEASE_S - BENCH_S - (SECONDS - start) - 10))}   # 10 s: a stuck driver's SIGKILL, then packing
  echo "paper capped at $PAPER_CAP_S s" >> "$OUT/paper.log"
  # shellcheck disable=SC2086
  timeout --signal=INT --kill-after=10 "$PAPER_CAP_S" python3 -c "from chexseg.paper import chexseg_paper; import sys; chexseg_paper(sys.argv[1:])" \
    --scale "$SCALE" --workers "$WORKERS" --root "$work/runs" --figures "$work/figures" ${STAGES:+--stages $STAGES} ${SET:+--set $SET} ${STUDENT_STEPS:+--student_steps $STUDENT_STEPS} $stack_flag 2>&1 \
    | progress_bars_out >> "$OUT/paper.log" || echo "paper run stopped: exit ${PIPESTATUS[0]}" >> "$OUT/paper.log"
  pkill -f 'nvidia-smi dmon' || true
  pkill -f ipykernel_launcher || true   # kernels a capped run left training (its driver waits for them only until SIGKILL)
  tar czf "$OUT/figures.tgz" -C "$work/figures" .
  # every finished run's results, per-image IoU and run.json (its phases), without weights: RESUME for the next lease
  (cd "$work" && find runs \( -name results.csv -o -name per_image_iou.csv -o -name run.json \) -print0 \
     | tar czf "$OUT/runs_done.tgz" --null -T -)
  if [ "$BENCH" = 1 ]; then run_benchmarks; fi
  tail -n 40 "$OUT/paper.log"
  ;;
*)
  sed -n '2,23p' "$0"; exit 2 ;;
esac
