#!/usr/bin/env bash
# parity.sh [STEP...]: issue 8's GPU evidence on the GPU machine, from binaries
# built here (that machine has no Go): GPU-vs-CPU parity of every PJRT kernel,
# and heft's end-to-end runs from a store.
#
#   bench/gpu/prepare.sh parity              # here: bench/gpu/out/parity.tar.gz (cgo
#                                            # pjrtgpu.test, heft and lorae2e; gpubench)
#   FUZZ_TARGETS='FuzzParseRange|FuzzSmallBodies' bench/fuzzlong/prepare.sh   # for fuzz=D only
#   bench/gpu/parity.sh fuzz=8m parity       # there, carrying bench/gpu/out/parity.tar.gz
#                                            # (and bench/fuzzlong/{bin,cache}.tar.gz, targets.txt)
#   bench/gpu/parity.sh e2e                  # there, in another call: timings without fuzzers
#
# Steps, in the order given (default: parity e2e):
#   parity    ops/internal/pjrtgpu's tests (-test.v, HEFT_TEST_BIG=1) on the PJRT
#             plugin: every dequant format (FP8 block with each kernel, INT8/W4A16,
#             the general kernel: AWQ GEMM, FP8 E4M3/E5M2 per tensor/channel/block,
#             E8M0 scales, quanto, packed 1/2/4/8-bit, act-order g_idx, BF16/F16/F32
#             outputs) and quantize scheme (fp8-block, int8, w4a16 sym/asym) bit for
#             bit against the CPU on random and edge-case inputs, merge and the
#             reductions within their stated bounds, the randomized SVD against the
#             exact optimum; then the table of paritytable.py (kernel → result)
#   e2e       lorae2e.sh with 1 layer (GPU and CPU) and 3 layers (GPU), and
#             dequante2e.sh with DQ_LAYERS (4) layers (SCALE=8: shapes / 8, for a quick try)
#   gpubench  gpubench.sh (LoRA kernels vs torch, dequant bandwidth, quantize/merge timings)
#   fuzz=D    bench/fuzzlong/run.sh D in the background while the next steps run,
#             waited for at the end; results in $OUT/fuzz. Don't put timing steps after it.
#
# The plugin is HEFT_PJRT_PLUGIN, else the jax wheel's (jax_plugins.xla_cuda13/12
# through python3). Results go to $OUT (the device tool's output folder) or
# bench/gpu/out/results. Exit status: 1 when a step failed, 2 when nothing runs.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
results=${OUT:-$here/out/results}
mkdir -p "$results"
# The kit travels as one archive (the device tool carries files, not builds).
if [ -f "$here/out/parity.tar.gz" ]; then
    tar -xzf "$here/out/parity.tar.gz" -C "$here" || { echo "parity.sh: cannot unpack out/parity.tar.gz" >&2; exit 2; }
    [ -f "$here/out/parity.commit" ] && echo "kit built from commit $(cat "$here/out/parity.commit")"
fi
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(parity e2e)
export GOPJRT_CUDA_CHECKS=0
plugin=${HEFT_PJRT_PLUGIN:-}
if [ -z "$plugin" ]; then
    for w in xla_cuda13 xla_cuda12; do
        d=$(python3 -c "import jax_plugins.$w as m; print(m.__path__[0])" 2>/dev/null) || continue
        if [ -f "$d/xla_cuda_plugin.so" ]; then plugin=$d/xla_cuda_plugin.so; break; fi
    done
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$results/gpu.txt"
echo "plugin: ${plugin:-none found}; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
status=0
fuzzpid=
fail() { echo "parity.sh: $*" >&2; status=1; }
for step in "${steps[@]}"; do
    t0=$(date +%s)
    case $step in
    parity)
        echo "== parity: ops/internal/pjrtgpu tests on the PJRT plugin"
        if [ -z "$plugin" ] || [ ! -f "$plugin" ]; then fail "no PJRT plugin (set HEFT_PJRT_PLUGIN)"; continue; fi
        if [ ! -x "$here/out/pjrtgpu.test" ]; then fail "out/pjrtgpu.test missing: run bench/gpu/prepare.sh parity"; continue; fi
        (cd "$root/ops/internal/pjrtgpu" && HEFT_TEST_PJRT_PLUGIN=$plugin HEFT_TEST_BIG=1 \
            "$here/out/pjrtgpu.test" -test.v -test.count=1 -test.timeout=15m) > "$results/pjrtgpu-test.log" 2>&1
        trc=$?
        grep -E '^(--- FAIL|FAIL|ok|PASS)|device .*PJRT|choices:|mutants:|TestBigRank256|ratio .* orth' "$results/pjrtgpu-test.log" | grep -v '^    .*parity	' | head -40
        python3 "$here/paritytable.py" "$results/pjrtgpu-test.log" | tee "$results/parity-table.md"
        [ "${PIPESTATUS[0]}" -eq 0 ] && [ $trc -eq 0 ] || fail "parity: test exit $trc (log: pjrtgpu-test.log)"
        ;;
    e2e)
        if [ ! -x "$here/e2e/heft" ] || [ ! -x "$here/e2e/lorae2e" ]; then fail "e2e/heft or e2e/lorae2e missing: run bench/gpu/prepare.sh parity"; continue; fi
        export HEFT_PJRT_PLUGIN=${plugin}
        echo "== lorae2e.sh, 1 layer, GPU and CPU"
        LAYERS=1 "$here/lorae2e.sh" 2>&1 | tee "$results/lorae2e-1.txt"
        [ "${PIPESTATUS[0]}" -eq 0 ] || fail "lorae2e 1 layer"
        echo "== lorae2e.sh, 3 layers, GPU"
        LAYERS=3 DEVICES=gpu "$here/lorae2e.sh" 2>&1 | tee "$results/lorae2e-3.txt"
        [ "${PIPESTATUS[0]}" -eq 0 ] || fail "lorae2e 3 layers"
        echo "== dequante2e.sh, ${DQ_LAYERS:-4} layers"
        LAYERS=${DQ_LAYERS:-4} "$here/dequante2e.sh" 2>&1 | tee "$results/dequante2e.txt"
        [ "${PIPESTATUS[0]}" -eq 0 ] || fail "dequante2e"
        grep -q "BRIDGES DIFFER\|failed" "$results/dequante2e.txt" && fail "dequante2e: a run failed or the bridges differ"
        ;;
    gpubench)
        echo "== gpubench"
        HEFT_PJRT_PLUGIN=$plugin OUT=$results "$here/gpubench.sh" | tee "$results/gpubench.txt"
        [ "${PIPESTATUS[0]}" -eq 0 ] || fail "gpubench"
        ;;
    fuzz=*)
        d=${step#fuzz=}
        if [ ! -f "$root/bench/fuzzlong/bin.tar.gz" ]; then fail "bench/fuzzlong/bin.tar.gz missing: run bench/fuzzlong/prepare.sh"; continue; fi
        echo "== fuzz: $(awk '{print $3}' "$root/bench/fuzzlong/targets.txt" | xargs) for $d each, ${FUZZ_PARALLEL:-1} workers each, in the background"
        (cd "$root" && OUT="$results/fuzz" bench/fuzzlong/run.sh "$d" > "$results/fuzz.txt" 2>&1) &
        fuzzpid=$!
        ;;
    *) fail "unknown step $step" ;;
    esac
    echo "-- $step: $(($(date +%s) - t0)) s"
done
if [ -n "$fuzzpid" ]; then
    echo "== waiting for the fuzzers"
    wait "$fuzzpid"
    cat "$results/fuzz.txt"
    awk '$1 != 0 {bad=1} END {exit bad}' "$results/fuzz/results.txt" 2>/dev/null || fail "fuzz: a target failed (crashers in fuzz/crashers.tar.gz)"
fi
exit $status
