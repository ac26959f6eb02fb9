#!/usr/bin/env bash
# run.sh: heft's randomized LoRA extraction next to numpy's full SVD on the
# same synthetic 2048×8192 delta (rank 128), one after the other.
#
#   bench/lora/run.sh
#   RANK=64 REPS=1 bench/lora/run.sh
#
# Creates bench/lora/.venv with numpy on first use (python3 -m venv; pip
# needs network access once). Environment: OUT (work directory, default
# bench/lora/out: delta.npy is 64 MiB), RANK (default 128), REPS (timed Go
# repetitions, default 3), NUMPY_REPS (timed numpy repetitions, default 1:
# its SVD is the slow side), NUMPY_RANDOMIZED_Q (also time heft's algorithm
# written in numpy with this many power iterations, default 3; -1 skips),
# PYTHON (default python3). Both sides use every core; the numbers are only
# comparable when nothing else loads the machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/out}
rank=${RANK:-128}
reps=${REPS:-3}
python=${PYTHON:-python3}
venv="$here/.venv"

die() { echo "run.sh: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "go is not on PATH"
command -v "$python" >/dev/null 2>&1 || die "no $python on PATH"

if [[ ! -x $venv/bin/python ]]; then
    echo "run.sh: creating $venv" >&2
    "$python" -m venv "$venv" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
py="$venv/bin/python"
if ! "$py" -c 'import numpy' >/dev/null 2>&1; then
    echo "run.sh: pip install numpy" >&2
    "$py" -m pip install -q numpy || die "pip install numpy failed"
fi

mkdir -p "$out"
cd "$root"
echo "== data"
go run ./bench/lora gen -out "$out/delta.npy"
echo
echo "== numpy"
"$py" "$here/numpy_svd.py" "$out/delta.npy" --rank "$rank" --reps "${NUMPY_REPS:-1}" \
    --randomized "${NUMPY_RANDOMIZED_Q:-3}" --out "$out/numpy.json"
echo
echo "== heft (go)"
go run ./bench/lora extract -in "$out/delta.npy" -ref "$out/numpy.json" -rank "$rank" -reps "$reps"
