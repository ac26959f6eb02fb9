#!/usr/bin/env bash
# servebench.sh: bench/serve on the GPU machine's 16 cores (the dev VM has 2, too few
# for heft serve and the client at once): heft serve vs nginx on a 2.2 GiB model,
# snapshot_download beside them, and heft pull between two stores.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
results=${OUT:-$out/results}
mkdir -p "$results"
nproc
py=()
if python3 -c "import huggingface_hub" 2>/dev/null; then py=(-python python3); fi
"$out/servebench" -heft "$out/heft" -nginx "$out/nginx" -size "${SIZE:-2.2GiB}" -reps "${REPS:-3}" -parallel "${PARALLEL:-8}" "${py[@]}" 2>&1 | tee "$results/servebench.txt"
exit ${PIPESTATUS[0]}
