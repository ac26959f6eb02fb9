#!/usr/bin/env bash
# prepare.sh [parity]: builds what bench/gpu/run.sh needs on the GPU machine into
# bench/gpu/out, and the kit of bench/gpu/parity.sh. With "parity", only the kit:
# bench/gpu/out/parity.tar.gz holds out/pjrtgpu.test (the cgo test binary of
# ops/internal/pjrtgpu), out/gpubench, e2e/heft (cgo) and e2e/lorae2e, stripped,
# with the commit they were built from; carry that one file (the device tool takes
# at most 64 MiB).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/out"
mkdir -p "$out/wheels" "$here/e2e"
# The parity kit. Everything cgo links only libc (go-xla dlopens the plugin), so
# binaries built here run on the GPU machine's glibc.
(cd "$root" && CGO_ENABLED=1 go test -c -trimpath -ldflags='-s -w' -o "$out/pjrtgpu.test" ./ops/internal/pjrtgpu)
(cd "$root" && CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o "$here/e2e/heft" .)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$here/e2e/lorae2e" ./bench/gpu/lorae2e)
(cd "$root" && CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o "$out/gpubench" ./ops/internal/pjrtgpu/gpubench)
# The commit built (HEFT_COMMIT names it where the tree is an export, not a checkout).
commit=${HEFT_COMMIT:-$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${HEFT_COMMIT:-}" ] && [ -n "$(cd "$root" && git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
fi
echo "$commit" > "$out/parity.commit"
tar -czf "$out/parity.tar.gz" -C "$here" out/pjrtgpu.test out/gpubench out/parity.commit e2e/heft e2e/lorae2e
echo "bench/gpu/out/parity.tar.gz: $(du -h "$out/parity.tar.gz" | cut -f1), commit $(cat "$out/parity.commit")"
[ "${1:-}" = parity ] && exit 0
# Stripped, like the kit: the device tool carries at most 64 MiB.
(cd "$root" && CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -ldflags='-s -w' -o "$out/heft" .)
# bench/serve and Debian's nginx, to time downloads on a machine with cores to spare.
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/servebench" ./bench/serve)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/importexport" ./bench/importexport)
if command -v nginx >/dev/null 2>&1; then cp "$(command -v nginx)" "$out/nginx"; fi
# Pure-Python wheels, and pydantic_core for each Python the machine might run.
python3 -m pip download -q --no-deps -d "$out/wheels" compressed-tensors loguru pydantic annotated_types typing_inspection
for v in 3.10 3.11 3.12 3.13 3.14; do
    python3 -m pip download -q --no-deps -d "$out/wheels" --only-binary=:all: --python-version "$v" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 pydantic_core psutil || true
done
ls -la "$out" "$out/wheels"
