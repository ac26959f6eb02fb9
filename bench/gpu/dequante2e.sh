#!/usr/bin/env bash
# dequante2e.sh: `heft dequant` end to end from a store: a model with Qwen3-32B's
# shapes (LAYERS decoder layers, default 4) quantized to FP8 block 128x128 is
# imported, then dequantized to a BF16 bridge on the GPU and on the CPU, as
# recipes (the default: the store records the recipe and the output hash) and
# materialized (the bridge stored as data), and the recipe bridge is exported
# (recipes evaluated on read, on the CPU). Prints wall time, GB/s of bridge
# weights and the stages (reading inputs, computing, storing) from --json.
# Needs bench/gpu/e2e/{heft,lorae2e} (cgo heft). SCALE=8 divides the shapes by 8.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin="$here/e2e"
work=${WORK:-$(mktemp -d)}
trap 'rm -rf "$work"' EXIT
"$bin/lorae2e" -out "$work/models" -layers "${LAYERS:-4}" -scale "${SCALE:-1}" -fp8
/usr/bin/time -f "import fp8: %e s, %M KiB" "$bin/heft" --store "$work/store" --quiet import "$work/models/fp8" --name q/fp8
run() { # name, heft args...
    local name=$1; shift
    local t0=$(date +%s.%N)
    /usr/bin/time -o "$work/time" -f "%M" "$bin/heft" --store "$work/store" --json "$@" > "$work/$name.json" || { echo "$name failed"; return; }
    local t1=$(date +%s.%N)
    python3 - "$work/$name.json" "$name" "$t0" "$t1" "$(cat "$work/time")" "$work/models/base" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]; wall = float(sys.argv[4]) - float(sys.argv[3]); rss = int(sys.argv[5]) / 1024
bridge = sum(os.path.getsize(os.path.join(sys.argv[6], f)) for f in os.listdir(sys.argv[6]) if f.endswith(".safetensors"))
st = r.get("stages", {})
print(f"{name:28s} {wall:7.2f} s  {bridge/wall/1e9:6.2f} GB/s of BF16 weights  RSS {rss:6.0f} MiB  on {r.get('device','-')}: "
      f"inputs {st.get('inputs_s',0):.2f} s, compute {st.get('compute_s',0):.2f} s, store {st.get('store_s',0):.2f} s")
PY
}
echo "model: $(du -sh "$work/models/base" | cut -f1) BF16, $(du -sh "$work/models/fp8" | cut -f1) FP8"
run "dequant (recipes) gpu" dequant q/fp8 --name q/bridge-gpu --device gpu
run "dequant (recipes) cpu" dequant q/fp8 --name q/bridge-cpu --device cpu
run "dequant --materialize gpu" dequant q/fp8 --name q/bridge-gpu-data --materialize --device gpu
run "dequant --materialize cpu" dequant q/fp8 --name q/bridge-cpu-data --materialize --device cpu
"$bin/heft" --store "$work/store" ls
for ref in q/bridge-gpu q/bridge-cpu-data; do
    rm -rf "$work/out"
    t0=$(date +%s.%N)
    "$bin/heft" --store "$work/store" --quiet export "$ref" "$work/out"
    t1=$(date +%s.%N)
    python3 -c "import sys; w=float(sys.argv[2])-float(sys.argv[1]); print(f'export {sys.argv[3]:22s} {w:7.2f} s  {int(sys.argv[4])/w/1e9:6.2f} GB/s')" "$t0" "$t1" "$ref" "$(du -sb "$work/out" | cut -f1)"
    (cd "$work/out" && sha256sum *.safetensors) > "$work/$(echo $ref | tr / _).sha"
done
cmp -s "$work/q_bridge-gpu.sha" "$work/q_bridge-cpu-data.sha" && echo "bridges from the GPU and the CPU: identical files" || echo "BRIDGES DIFFER"
"$bin/heft" --store "$work/store" verify --read-data | tail -2
