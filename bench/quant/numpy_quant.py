"""numpy doing what bench/quant/main.go timed heft doing, on the same bytes.

FP8 block quantization as formats.md §5.4/§12 define it (BF16 scale =
bf16(f32(absmax)/448) per 128x128 block, codes = e4m3(clamp(f32(w)/f32(scale),
±448))) and dequantization (bf16(f32(code) * f32(scale))), vectorized with
numpy and ml_dtypes. Checks that both outputs equal heft's bit for bit.

Usage: python numpy_quant.py DIR ROWS COLS [REPS]
"""
import json
import sys
import time

import ml_dtypes
import numpy as np

BF16, F8 = ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn


def quantize(w, rows, cols):
    br, bc = rows // 128, cols // 128
    wf = w.astype(np.float32)
    amax = np.abs(wf).reshape(br, 128, bc, 128).max(axis=(1, 3))
    scale = (amax / np.float32(448)).astype(BF16)
    scale = np.where(scale.astype(np.float32) == 0, np.asarray(2.0**-7, BF16), scale)
    s = scale.astype(np.float32)[:, None, :, None]
    q = np.clip(wf.reshape(br, 128, bc, 128) / s, -448, 448).astype(F8).reshape(rows, cols)
    return q, scale


def dequant(q, scale, rows, cols):
    br, bc = rows // 128, cols // 128
    s = scale.astype(np.float32)[:, None, :, None]
    return (q.astype(np.float32).reshape(br, 128, bc, 128) * s).astype(BF16).reshape(rows, cols)


def best(f, reps):
    t = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        out = f()
        t = min(t, time.perf_counter() - start)
    return t, out


def main():
    d, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    w = np.fromfile(f"{d}/weight.bf16", dtype=BF16).reshape(rows, cols)
    codes = np.fromfile(f"{d}/codes.f8", dtype=np.uint8).reshape(rows, cols)
    scale = np.fromfile(f"{d}/scale.bf16", dtype=BF16).reshape(rows // 128, cols // 128)
    bridge = np.fromfile(f"{d}/bridge.bf16", dtype=np.uint16).reshape(rows, cols)
    tq, (q, s) = best(lambda: quantize(w, rows, cols), reps)
    td, deq = best(lambda: dequant(codes.view(F8), scale, rows, cols), reps)
    gb = w.nbytes / 1e9
    res = {
        "quantize_s": tq, "quantize_gbps": gb / tq, "dequant_s": td, "dequant_gbps": gb / td,
        "codes_equal": bool(np.array_equal(q.view(np.uint8), codes)),
        "scales_equal": bool(np.array_equal(s.view(np.uint16), scale.view(np.uint16))),
        "bridge_equal": bool(np.array_equal(deq.view(np.uint16), bridge)),
        "numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__,
    }
    print(f"numpy {np.__version__}: FP8 block quantize {tq:.3f} s = {gb/tq:.2f} GB/s of BF16; dequant {td:.3f} s = {gb/td:.2f} GB/s;"
          f" identical to heft: codes {res['codes_equal']}, scales {res['scales_equal']}, bridge {res['bridge_equal']}")
    json.dump(res, open(f"{d}/numpy.json", "w"), indent=2)
    if not (res["codes_equal"] and res["scales_equal"] and res["bridge_equal"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
