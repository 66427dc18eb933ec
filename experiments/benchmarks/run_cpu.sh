#!/usr/bin/env bash
# The README's CPU figures in one go, each benchmark's JSON under DIR
# (default runs/benchmarks/cpu, untracked; the committed figures in
# experiments/results/cpu are rewritten only when DIR names them). Run on a
# quiet machine: every JSON records the load average, and load slows torch
# more than XLA. A relative DIR is the caller's.
#   bash experiments/benchmarks/run_cpu.sh [DIR]
#   bash experiments/benchmarks/run_cpu.sh experiments/results/cpu   # publish
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../../runs/benchmarks/cpu}")
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
run() {  # name, then the benchmark's arguments
  local name=$1; shift
  echo "== $name (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  local json=${JSON_NAME:-$name}
  "$py" "experiments/benchmarks/$name.py" --json="$out/$json.json" "$@" | tail -1
}
run smpl_forward --model=random
run smplify
JSON_NAME=smplify_random_smpl run smplify --body_model=random-smpl
run regressor
run train_step
run photo
