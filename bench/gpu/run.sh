#!/usr/bin/env bash
# run.sh: the GPU machine's checks and benchmarks, in one call of the device tool.
#
#   bench/gpu/prepare.sh        # here: builds bench/gpu/out/heft and gpubench, fetches the wheels
#   bench/gpu/run.sh            # there (device tool, carry bench/gpu/out): prints a report
#
# The GPU machine has torch, transformers, peft and safetensors but no network and
# no Go: the heft binary and the compressed-tensors wheel (with the small pure-Python
# dependencies it may lack) travel in bench/gpu/out. Results go to $OUT (the device
# tool's output folder) or bench/gpu/out/results.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
results=${OUT:-$out/results}
mkdir -p "$results"
pylib="$out/pylib"
mkdir -p "$pylib"
# Install only what the machine lacks, so its own torch/transformers stay in use.
for pair in compressed_tensors:compressed_tensors loguru:loguru pydantic:pydantic pydantic_core:pydantic_core \
            annotated_types:annotated_types typing_inspection:typing_inspection psutil:psutil; do
    mod=${pair%%:*}; whl=${pair##*:}
    if ! PYTHONPATH="$pylib" python3 -c "import $mod" 2>/dev/null; then
        # pip picks the wheel matching this Python among those carried.
        python3 -m pip install -q --no-index --no-deps --find-links "$out/wheels" --target "$pylib" "${whl//_/-}" || echo "run.sh: could not install $whl" >&2
    fi
done
export PYTHONPATH="$pylib${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$results/gpu.txt"
echo "== libcheck: compressed-tensors, transformers and PEFT on heft's outputs"
python3 "$here/libcheck.py" --heft "$out/heft" --work "$results/libcheck-work" > "$results/libcheck.json" 2> "$results/libcheck.log"
status=$?
cat "$results/libcheck.json"
rm -rf "$results/libcheck-work"
if [ -x "$out/gpubench" ]; then
    echo "== gpubench: PJRT GPU backend parity, LoRA extraction vs torch.linalg.svd, FP8 dequant bandwidth"
    "$here/gpubench.sh" | tee "$results/gpubench.txt"
    gstatus=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] && status=$gstatus
fi
exit $status
