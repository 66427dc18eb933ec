#!/usr/bin/env bash
# The accelerator check (experiments/device_check.py: parts, wheels, output).
#   bash experiments/device_check.sh [--dry-run] [OUT_DIR] [--parts=a,b]
# OUT_DIR defaults to $OUT, else a new temporary folder (printed), never the
# repository. PYTHON picks the interpreter (default python3). Exit status 0
# when every part passed.
set -euo pipefail
export SPIN_DEVICE_CHECK_CWD="$PWD"  # a relative OUT_DIR is the caller's
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" experiments/device_check.py "$@"
