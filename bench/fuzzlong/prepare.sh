#!/usr/bin/env bash
# prepare.sh: builds every package's fuzz targets as instrumented test binaries
# (go test -c -fuzz) into bin.tar.gz, with targets.txt and a copy of the golden
# files some seeds read, for the long fuzz run on a machine without Go
# (run.sh). Run from anywhere in the repository. FUZZ_TARGETS=REGEX keeps only
# the targets whose names match (e.g. 'FuzzParseRange|FuzzSmallBodies'), and
# builds only their packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/fuzzlong
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$out/targets.txt"
for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    rel=${dir#"$PWD"/}
    names=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u || true)
    if [ -n "${FUZZ_TARGETS:-}" ]; then names=$(echo "$names" | grep -E "^(${FUZZ_TARGETS})\$" || true); fi
    [ -n "$names" ] || continue
    bin=$(echo "$rel" | tr / _).test
    go test -c -fuzz=. -ldflags="-s -w" -o "$tmp/$bin" "./$rel"
    for n in $names; do echo "$rel $bin $n" >> "$out/targets.txt"; done
done
tar -czf "$out/bin.tar.gz" -C "$tmp" .
rm -rf "$out/golden" && cp -r ../shared/testdata/golden "$out/golden"
echo "$(wc -l < "$out/targets.txt") targets, $(du -h "$out/bin.tar.gz" | cut -f1)"
