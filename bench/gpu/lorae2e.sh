#!/usr/bin/env bash
# lorae2e.sh: `heft lora extract` end to end from a store on the GPU machine: a
# one-layer model with Qwen3-32B's shapes and its fine-tune are imported, then
# rank-256 adapters are extracted on the GPU (and, for one module set, on the CPU
# for comparison of results). Needs bench/gpu/e2e/{heft,lorae2e} (cgo heft).
# LAYERS (1), DEVICES ("gpu cpu"), RANK (256); SCALE=8 divides the shapes by 8
# (a quick run on a small machine).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin="$here/e2e"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/lorae2e" -out "$work/models" -layers "${LAYERS:-1}" -scale "${SCALE:-1}"
h() { "$bin/heft" --store "$work/store" "$@"; }
/usr/bin/time -f "import base: %e s, %M KiB" "$bin/heft" --store "$work/store" --quiet import "$work/models/base" --name q/base
/usr/bin/time -f "import tuned: %e s, %M KiB" "$bin/heft" --store "$work/store" --quiet import "$work/models/tuned" --name q/tuned
h doctor
for dev in ${DEVICES:-gpu cpu}; do
    /usr/bin/time -f "lora extract --device $dev: %e s, %M KiB peak RSS" "$bin/heft" --store "$work/store" --json lora extract --base q/base --tuned q/tuned --rank "${RANK:-256}" --device $dev --name q/lora-$dev > "$work/lora-$dev.json"
    python3 - "$work/lora-$dev.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"method {r['method']} rank {r['rank']}: {len(r['modules'])} modules, rel. error mean {r['mean_rel_error']:.4f} max {r['max_rel_error']:.4f}; left out {100*r['excluded_energy_share']:.2f}% of the delta energy")
tot = {"read": 0.0, "svd": 0.0, "check": 0.0}
for m in r['modules']:
    sec = m.get('seconds', {})
    for k in tot: tot[k] += sec.get(k, 0)
    print(f"  {m['module']:40s} {m['out']}x{m['in']}  energy {m['energy']:.4f}  rel err {m['rel_error']:.4f}  read {sec.get('read',0):.2f} s svd {sec.get('svd',0):.2f} s check {sec.get('check',0):.2f} s")
print(f"  summed over modules: read {tot['read']:.2f} s, svd {tot['svd']:.2f} s, check {tot['check']:.2f} s (two modules overlap on a GPU)")
PY
done
