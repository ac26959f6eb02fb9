"""Uploads a model directory to `heft serve` with huggingface_hub and downloads
models back, as users do. Prints JSON: sha256 of every downloaded file, and what
safetensors (numpy) and ml_dtypes read from the downloaded weights.

Usage: python hub_roundtrip.py SPEC.json  (endpoint and token from HF_ENDPOINT/HF_TOKEN)
"""
import hashlib
import json
import os
import sys

import ml_dtypes
import numpy as np

np.float8_e4m3fn = ml_dtypes.float8_e4m3fn
import safetensors.numpy as stnp  # noqa: E402
from huggingface_hub import HfApi, snapshot_download  # noqa: E402


def tree_sha(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, d)
            if rel.startswith(".cache"):
                continue
            out[rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    api = HfApi()
    api.create_repo(spec["upload_repo"], exist_ok=True)
    api.upload_folder(repo_id=spec["upload_repo"], folder_path=spec["upload_dir"], commit_message="upload from huggingface_hub")
    api.create_tag(spec["upload_repo"], tag="v1")
    out = {"downloads": {}, "tensors": {}, "whoami": api.whoami()["name"]}
    for repo in spec["download"]:
        d = snapshot_download(repo, cache_dir=spec["cache"])
        out["downloads"][repo] = tree_sha(d)
        n = 0
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                for name, a in stnp.load_file(os.path.join(d, f)).items():
                    assert np.isfinite(a.astype(np.float32)).all() or a.dtype.kind in "iu", name
                    n += 1
        out["tensors"][repo] = n
    d = snapshot_download(spec["upload_repo"], revision="v1", cache_dir=spec["cache"])
    out["downloads"][spec["upload_repo"] + "@v1"] = tree_sha(d)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
