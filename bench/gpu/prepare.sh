#!/usr/bin/env bash
# prepare.sh: builds what bench/gpu/run.sh needs on the GPU machine into bench/gpu/out.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/out"
mkdir -p "$out/wheels"
(cd "$root" && CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -o "$out/heft" .)
python3 -m pip download -q --no-deps -d "$out/wheels" compressed-tensors loguru pydantic pydantic_core \
    annotated_types typing_inspection psutil --python-version 3.12 --only-binary=:all: \
    || python3 -m pip download -q --no-deps -d "$out/wheels" compressed-tensors loguru pydantic pydantic_core annotated_types typing_inspection psutil
ls -la "$out" "$out/wheels"
