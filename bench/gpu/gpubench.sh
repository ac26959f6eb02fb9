#!/usr/bin/env bash
# gpubench.sh: heft's PJRT GPU backend on the GPU machine — parity with the CPU
# kernels, LoRA extraction at rank 256 on Qwen3-32B shapes next to torch.linalg.svd,
# and FP8 block dequant bandwidth. Needs bench/gpu/out/gpubench (prepare.sh builds
# it with cgo) and the jax CUDA PJRT plugin (found through python3, or named by
# HEFT_PJRT_PLUGIN); the torch baseline needs torch with CUDA.
#
#   bench/gpu/prepare.sh                 # here
#   bench/gpu/gpubench.sh                # there; report on stdout, JSON in $OUT/gpubench
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
results=${OUT:-$out/results}/gpubench
mkdir -p "$results"
bin="$out/gpubench"
if [ ! -x "$bin" ]; then
    echo "gpubench.sh: $bin missing: run bench/gpu/prepare.sh first" >&2
    exit 2
fi
torch=()
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    torch=(-torch "$here/gpubench.py" -python python3)
else
    echo "gpubench.sh: no CUDA torch: running without the torch baseline" >&2
fi
# The deltas handed to torch (about 2 GB for one layer) go to local disk.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" -out "$work" "${torch[@]}" "$@" 2> >(tee "$results/gpubench.log" >&2)
status=$?
cp "$work/gpubench.json" "$results/" 2>/dev/null
exit $status
