#!/usr/bin/env bash
# importexport.sh: bench/importexport (heft import/export vs cp) on the GPU
# machine's 16 cores and local disk, twice.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
for i in 1 2; do
    "$out/importexport" -size "${SIZE:-2.5GiB}" -heft "$out/heft" 2>&1 | tail -12
done
