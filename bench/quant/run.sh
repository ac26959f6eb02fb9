#!/usr/bin/env bash
# run.sh: heft's FP8 block quantize and dequant next to numpy's on the same
# 8192×5120 BF16 weight (Qwen3-32B's q_proj shape), back to back.
#
#   bench/quant/run.sh            ROWS=25600 COLS=5120 bench/quant/run.sh
#
# Creates bench/quant/.venv with numpy and ml_dtypes on first use.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/out}
rows=${ROWS:-8192}
cols=${COLS:-5120}
venv="$here/.venv"
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import numpy, ml_dtypes' 2>/dev/null || "$venv/bin/python" -m pip install -q numpy ml_dtypes
mkdir -p "$out"
cd "$root"
go run ./bench/quant -out "$out" -rows "$rows" -cols "$cols" -reps "${REPS:-5}"
"$venv/bin/python" "$here/numpy_quant.py" "$out" "$rows" "$cols" "${NUMPY_REPS:-3}"
