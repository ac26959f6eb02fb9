"""Checks the files of heft's seed pipeline with the reference Python libraries.

safetensors (numpy backend) reads every exported file; ml_dtypes decodes BF16 and
FP8. Every tensor's values must agree with the values heft computed for it (a
SHA-256 of the float32 or int64 values, NaN canonicalised), and numpy
re-implementations of the formats must reproduce heft's bytes: the FP8 block
quantization of the BF16 base (formats.md §5.4, §12), its dequantized bridge, the
PEFT adapter's factors (B·A against tuned − base), and the merge onto the FP8 base.

Usage: python check_pipeline.py SPEC.json   (written by cli/pipeline_test.go)
Prints one JSON object with the findings; exits 1 when a check fails.
"""
import hashlib
import json
import os
import sys

import ml_dtypes
import numpy as np

# safetensors' numpy backend names the FP8 dtypes as numpy attributes, which only
# ml_dtypes provides.
np.float8_e4m3fn = ml_dtypes.float8_e4m3fn
np.float8_e5m2 = ml_dtypes.float8_e5m2
import safetensors.numpy as stnp  # noqa: E402

BF16 = ml_dtypes.bfloat16
F8 = ml_dtypes.float8_e4m3fn
failures = []


def fail(msg):
    failures.append(msg)


def load_dir(d):
    out = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".safetensors"):
            out.update(stnp.load_file(os.path.join(d, name)))
    return out


def value_hash(a):
    if a.dtype.kind in "iub":
        return hashlib.sha256(np.ascontiguousarray(a.astype("<i8")).tobytes()).hexdigest()
    f = np.ascontiguousarray(a.astype(np.float32)).reshape(-1)
    bits = f.view("<u4").copy()
    bits[np.isnan(f)] = 0x7FC00000
    return hashlib.sha256(bits.tobytes()).hexdigest()


def f32(a):
    return a.astype(np.float32)


def block_scale_grid(scale, rows, cols, block=128):
    return np.repeat(np.repeat(f32(scale), block, axis=0), block, axis=1)[:rows, :cols]


def main():
    spec = json.load(open(sys.argv[1]))
    report = {"tensors_checked": 0}
    tensors = {}
    # 1. Every file heft wrote loads, and every value agrees with heft's.
    for ref, d in spec["exports"].items():
        ts = load_dir(d)
        tensors[ref] = ts
        want = spec["value_hashes"][ref]
        if set(ts) != set(want):
            fail(f"{ref}: tensors {sorted(set(ts) ^ set(want))[:5]} differ between safetensors and heft")
        for name, a in ts.items():
            report["tensors_checked"] += 1
            if name in want and value_hash(a) != want[name]:
                fail(f"{ref}: {name}: values differ from heft's")
    base, tuned = load_dir(spec["base"]), load_dir(spec["tuned"])
    fp8, bridge = tensors["qwen/base-fp8"], tensors["qwen/bridge"]

    # 2. The FP8 block quantization, recomputed from the BF16 base: scale =
    # bf16(f32(absmax) / 448) per 128x128 block (BF16 scales, as compressed-tensors
    # writes for a BF16 model), codes = e4m3(clamp(f32(w) / f32(scale), ±448)).
    code_mismatch = scale_mismatch = modules = 0
    for name, codes in fp8.items():
        if codes.dtype != F8:
            continue
        modules += 1
        prefix = name[: -len(".weight")]
        w = f32(base[name])
        rows, cols = w.shape
        br, bc = -(-rows // 128), -(-cols // 128)
        pad = np.zeros((br * 128, bc * 128), np.float32)
        pad[:rows, :cols] = np.abs(w)
        amax = pad.reshape(br, 128, bc, 128).max(axis=(1, 3))
        scale = (amax / np.float32(448)).astype(BF16)
        scale = np.where(f32(scale) == 0, np.asarray(2.0**-7, dtype=BF16), scale)
        got_scale = fp8[prefix + ".weight_scale"]
        scale_mismatch += int((f32(scale) != f32(got_scale)).sum())
        q = np.clip(w / block_scale_grid(scale, rows, cols), -448, 448).astype(F8)
        code_mismatch += int((q.view(np.uint8) != codes.view(np.uint8)).sum())
        # 3. The bridge is bf16(f32(code) * f32(scale)).
        deq = (f32(codes) * block_scale_grid(got_scale, rows, cols)).astype(BF16)
        if not np.array_equal(deq.view(np.uint16), bridge[name].view(np.uint16)):
            fail(f"bridge: {name} is not bf16(code × scale)")
    report["fp8_modules"] = modules
    report["fp8_code_mismatches"] = code_mismatch
    report["fp8_scale_mismatches"] = scale_mismatch
    if code_mismatch or scale_mismatch or modules == 0:
        fail(f"FP8 quantization: {code_mismatch} codes and {scale_mismatch} scales differ from numpy's ({modules} modules)")

    # 4. The adapter: PEFT keys and shapes, and B·A against the delta.
    ad = tensors["qwen/lora-a"]
    cfg = json.load(open(os.path.join(spec["exports"]["qwen/lora-a"], "adapter_config.json")))
    r = cfg["r"]
    if cfg["lora_alpha"] != r or cfg.get("modules_to_save") not in (None, []) or cfg["peft_type"] != "LORA":
        fail(f"adapter_config.json: {cfg}")
    rel = {}
    for key, a in ad.items():
        if not key.endswith(".lora_A.weight"):
            continue
        mod = key[len("base_model.model."): -len(".lora_A.weight")]
        b = ad[key.replace("lora_A", "lora_B")]
        delta = f32(tuned[mod + ".weight"]) - f32(base[mod + ".weight"])
        if a.shape != (r, delta.shape[1]) or b.shape != (delta.shape[0], r):
            fail(f"adapter {mod}: A {a.shape} B {b.shape} for delta {delta.shape}")
            continue
        approx = f32(b) @ f32(a)
        rel[mod] = float(np.linalg.norm(approx - delta) / np.linalg.norm(delta))
        want = spec["lora_rel_error"][mod]
        if abs(rel[mod] - want) > 1e-3:
            fail(f"adapter {mod}: numpy relative error {rel[mod]:.5f}, heft reported {want:.5f}")
    report["adapter_modules"] = len(rel)
    report["adapter_mean_rel_error"] = sum(rel.values()) / max(1, len(rel))

    # 5. The merge onto the FP8 base: bf16(f32(code)·scale + B·A) (scaling 1).
    merged = tensors["qwen/merged"]
    ulp_off = total = 0
    for key, a in ad.items():
        if not key.endswith(".lora_A.weight"):
            continue
        mod = key[len("base_model.model."): -len(".lora_A.weight")]
        codes = fp8[mod + ".weight"]
        rows, cols = codes.shape
        w = f32(codes) * block_scale_grid(fp8[mod + ".weight_scale"], rows, cols)
        want = (w + f32(ad[key.replace("lora_A", "lora_B")]) @ f32(a)).astype(BF16)
        got = merged[mod + ".weight"]
        # float32 matmuls sum in different orders, so a value near a rounding
        # boundary may land one BF16 step away; where W + B·A nearly cancels, a
        # step is tiny, so bound the absolute error by the tensor's scale too.
        diff = np.abs(want.view(np.uint16).astype(np.int32) - got.view(np.uint16).astype(np.int32))
        absdiff = np.abs(f32(want) - f32(got))
        bound = 1e-4 * float(np.abs(f32(want)).max())
        if ((diff > 1) & (absdiff > bound)).any():
            fail(f"merged {mod}: differs from numpy by {diff.max()} BF16 ulps, {absdiff.max():.3g} absolute")
        ulp_off += int((diff != 0).sum())
        total += diff.size
    report["merge_values"] = total
    report["merge_one_ulp_off"] = ulp_off
    if total == 0 or ulp_off > total // 100:
        fail(f"merge: {ulp_off} of {total} values one ulp off numpy's float32 matmul")
    report["failures"] = failures
    json.dump(report, sys.stdout)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
