#!/usr/bin/env bash
# run.sh FUZZTIME: the long fuzz run on a machine without Go (the device tool's
# host): every target of targets.txt at once, each for FUZZTIME of wall time
# with one worker (FUZZ_PARALLEL workers if set), from the corpus of earlier rounds (cache.tar.gz, if present).
# Writes to $OUT: cache.tar.gz (the grown corpus, for the next round),
# results.txt, logs.tar.gz (a log per target) and crashers.tar.gz (new failing
# inputs under their testdata/fuzz paths, to commit). Needs prepare.sh's outputs.
set -uo pipefail
fuzztime=${1:-10m}
root=$PWD
here=$root/bench/fuzzlong
out=${OUT:-/tmp/fuzzlong-out}
mkdir -p "$out/logs" /tmp/fz/bin /tmp/fz/cache
tar -xzf "$here/bin.tar.gz" -C /tmp/fz/bin
[ -f "$here/cache.tar.gz" ] && tar -xzf "$here/cache.tar.gz" -C /tmp/fz
# Seeds read ../shared/testdata/golden relative to the repository.
if [ ! -e "$root/../shared/testdata/golden" ]; then
    mkdir -p "$root/../shared/testdata" && ln -sfn "$here/golden" "$root/../shared/testdata/golden"
fi
touch /tmp/fz/start
while read -r dir bin name; do
    (
        cd "$root/$dir" || exit 1
        /tmp/fz/bin/"$bin" -test.run='^$' -test.fuzz="^${name}\$" -test.fuzztime="$fuzztime" -test.parallel="${FUZZ_PARALLEL:-1}" \
            -test.timeout=0 -test.fuzzcachedir="/tmp/fz/cache/$dir" > "$out/logs/$name.log" 2>&1
        echo "$? $dir $name $(grep -o 'execs: [0-9]*' "$out/logs/$name.log" | tail -1)" >> "$out/results.txt"
    ) &
done < "$here/targets.txt"
wait
tar -czf "$out/cache.tar.gz" -C /tmp/fz cache
# Few files come back from the device: logs and crashers travel as one archive each.
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$out/logs"
(cd "$root" && find . -path '*/testdata/fuzz/*' -newer /tmp/fz/start -type f | tar -czf "$out/crashers.tar.gz" -T -)
sort -k2 "$out/results.txt"
fails=$(awk '$1 != 0' "$out/results.txt" | wc -l)
echo "$(wc -l < "$out/results.txt") targets fuzzed for $fuzztime each on $(nproc) cores, $fails failed"
