#!/usr/bin/env bash
# The accelerator check (experiments/device_check.py: parts, wheels, output).
#   bash experiments/device_check.sh [--dry-run] [OUT_DIR] [--parts=a,b]
# OUT_DIR defaults to $OUT, else ./device_check_out. PYTHON picks the
# interpreter (default python3). Exit status 0 when every part passed.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" experiments/device_check.py "$@"
