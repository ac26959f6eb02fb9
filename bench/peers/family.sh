#!/usr/bin/env bash
# family.sh: what a model family costs to keep in heft, in restic and in
# Git LFS storage; prints a markdown table.
#
#   bench/peers/family.sh                  # 256 MiB base (about 2 minutes)
#   FAMILY_MIB=1024 bench/peers/family.sh
#
# The family (bench/peers/genfamily, internal/modelgen, deterministic):
#   base      BF16 N(0, 0.02) weights of modelgen.Sized(FAMILY_MIB MiB), 2 shards
#   reshard   the same tensors in 3 shards
#   finetune  a full fine-tune of base with frozen embeddings
#   copy      a byte-identical copy of base
#
# Measured, each into a fresh store or repository:
#   heft      `heft import DIR --name bench/NAME` of the four in that order;
#             physical bytes = `heft --json stats` physical_bytes (pack files;
#             the whole store directory, index included, is in the notes)
#   restic    `restic backup --compression max DIR` of the four in that order
#             (one snapshot each) into a new repository (format 2);
#             physical bytes = du of the repository directory
#   git-lfs   the bytes Git LFS keeps: every distinct file (by sha256) once,
#             uncompressed (what .git/lfs/objects and the LFS server hold when
#             every file is LFS-tracked); computed, not run; no time
# Seconds are wall-clock for the four imports or backups together, with
# everything both tools do by default (both use all cores).
#
# Environment: OUT (default bench/peers/out), FAMILY_MIB (default 256),
# HEFT_BIN (default /tmp/heft, built from this checkout with go build),
# KEEP=1 to keep the models, the store and the repository (by default only
# $OUT/family/table.md, heft-stats.json and sha256-sizes.txt stay).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$here/out}/family
mib=${FAMILY_MIB:-256}
heft=${HEFT_BIN:-/tmp/heft}
models=(base reshard finetune copy)

die() { echo "family.sh: $*" >&2; exit 1; }
for tool in go restic sha256sum du find awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH (restic: run bench/peers/setup.sh, or apt-get install restic)"
done
restic_version=$(restic version | awk '{print $2}')
case $restic_version in
    0.[0-9].* | 0.1[0-3].*) die "restic $restic_version has no --compression; 0.14 or later is needed" ;;
esac

secs() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

heft_version="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- . ':!bench/peers' 2>/dev/null || echo ' (with uncommitted changes)')"
echo "family.sh: building heft into $heft" >&2
(cd "$root" && go build -o "$heft" .)

rm -rf "$out"
mkdir -p "$out"
echo "family.sh: generating the family (${mib} MiB base) in $out/models" >&2
(cd "$root" && go run ./bench/peers/genfamily -out "$out/models" -size-mib "$mib")
cd "$out/models"

logical=$(find "${models[@]}" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
files=$(find "${models[@]}" -type f | wc -l)

# --- heft ---------------------------------------------------------------------
store="$out/heft-store"
echo "family.sh: heft import x4 into $store" >&2
t0=$(secs)
for m in "${models[@]}"; do
    "$heft" --store "$store" --quiet import "$m" --name "bench/$m" >/dev/null
done
t1=$(secs)
heft_secs=$(elapsed "$t0" "$t1")
heft_physical=$("$heft" --store "$store" --json stats | awk -F'[:,]' '/"physical_bytes"/ {gsub(/ /, "", $2); print $2}')
[[ -n $heft_physical ]] || die "no physical_bytes in heft stats"
heft_du=$(du -sb "$store" | cut -f1)
"$heft" --store "$store" --json stats >"$out/heft-stats.json"

# --- restic ---------------------------------------------------------------------
repo="$out/restic-repo"
export RESTIC_PASSWORD=heft-bench RESTIC_CACHE_DIR="$out/restic-cache"
restic --repo "$repo" --quiet init --repository-version 2 >/dev/null
echo "family.sh: restic backup --compression max x4 into $repo" >&2
t0=$(secs)
for m in "${models[@]}"; do
    restic --repo "$repo" --quiet backup --compression max "$m" >/dev/null
done
t1=$(secs)
restic_secs=$(elapsed "$t0" "$t1")
restic_physical=$(du -sb "$repo" | cut -f1)

# --- git-lfs storage --------------------------------------------------------------
hashes="$out/sha256-sizes.txt"
find "${models[@]}" -type f -print0 | sort -z | while IFS= read -r -d '' f; do
    printf '%s %s %s\n' "$(sha256sum <"$f" | cut -c1-64)" "$(stat -c %s "$f")" "$f"
done >"$hashes"
lfs_physical=$(sort -u -k1,1 "$hashes" | awk '{s += $2} END {print s}')
lfs_distinct=$(cut -d' ' -f1 "$hashes" | sort -u | wc -l)

stat() { awk -F'[:,]' -v k="\"$1\"" '$1 ~ k {gsub(/ /, "", $2); print $2; exit}' "$out/heft-stats.json"; }
ratio() { awk -v p="$1" -v l="$logical" 'BEGIN {printf "%.4f", p / l}'; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "## Model family: heft vs restic vs Git LFS storage"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, ${cpu:-unknown CPU}; load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- family: base (BF16 N(0,0.02), ${mib} MiB, 2 shards), reshard (3 shards), finetune (frozen embeddings), copy; ${files} files, ${logical} bytes logical"
    echo "- versions: heft ${heft_version}, restic ${restic_version}, $(go version | cut -d' ' -f3)"
    echo
    echo "| tool | physical bytes | physical/logical | import/backup s | notes |"
    echo "|---|---:|---:|---:|---|"
    echo "| logical (4 directories) | ${logical} | 1.0000 | - | ${files} files |"
    echo "| git-lfs storage | ${lfs_physical} | $(ratio "$lfs_physical") | - | ${lfs_distinct} distinct files by sha256, uncompressed (computed) |"
    echo "| restic --compression max | ${restic_physical} | $(ratio "$restic_physical") | ${restic_secs} | du of the repository, 4 snapshots |"
    echo "| heft | ${heft_physical} | $(ratio "$heft_physical") | ${heft_secs} | stats physical_bytes; whole store dir ${heft_du} bytes ($(ratio "$heft_du")) |"
    echo
    echo "heft by stage (\`heft stats\`): logical $(stat logical_bytes) → file dedup $(stat after_file_dedup_bytes) → tensor dedup $(stat after_tensor_dedup_bytes) → chunk dedup $(stat after_chunk_dedup_bytes) → delta $(stat after_delta_bytes) ($(stat delta_chunks) delta chunks) → compression $(stat after_compression_bytes) → physical $(stat physical_bytes)"
} | tee "$out/table.md"

if [[ ${KEEP:-0} != 1 ]]; then
    cd "$out"
    rm -rf models heft-store restic-repo restic-cache
fi
