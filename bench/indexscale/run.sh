#!/bin/sh
# Index scale benchmark (issue 7): import throughput into a store seeded with 10 M
# synthetic chunk records against an empty store, and point lookups against the
# 10 M index. Needs about 4 GiB of free disk (index 1.2 GiB, packs, the model) and
# takes 3-5 minutes on 2 cores. Extra arguments go to the benchmark, e.g.
#   bench/indexscale/run.sh -chunks 20000000 -reps 7
set -eu
cd "$(dirname "$0")/../.."
go build -o /tmp/heft-indexscale ./bench/indexscale
exec /tmp/heft-indexscale -chunks 10000000 -size 1GiB -reps 5 -lookup-reps 3 "$@"
