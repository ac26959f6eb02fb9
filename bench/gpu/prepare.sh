#!/usr/bin/env bash
# prepare.sh: builds what bench/gpu/run.sh needs on the GPU machine into bench/gpu/out.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/out"
mkdir -p "$out/wheels"
# Stripped, like gpubench below: the device tool carries at most 64 MiB.
(cd "$root" && CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -ldflags='-s -w' -o "$out/heft" .)
# The GPU check and benchmark: cgo (go-xla dlopens the PJRT plugin), stripped.
# It links only libc, so a binary built here runs on the GPU machine's glibc.
(cd "$root" && CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o "$out/gpubench" ./ops/internal/pjrtgpu/gpubench)
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
