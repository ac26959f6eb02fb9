#!/usr/bin/env python3
"""numpy_svd.py: time numpy.linalg.svd (full_matrices=False) plus rank-r
truncation on the delta written by `go run ./bench/lora gen`, the reference
for heft's randomized extraction (mergekit does the same with torch).

    python numpy_svd.py delta.npy [--rank 128] [--reps 1] [--out numpy.json] [--randomized Q]

Prints the time and the reconstruction error ||delta - U_r S_r Vt_r||_F, and
writes a JSON file with the time, that error, the exact rank-r optimum
sqrt(sum_{i>r} s_i^2) from numpy's singular values, ||delta||_F and the head
of the spectrum; `go run ./bench/lora extract -ref numpy.json` compares
against it.

--randomized Q also times the same randomized range finder as heft (Gaussian
sketch of rank + max(10, rank/4) directions, Q power iterations with QR after
every product, small SVD of B = Q^T A) written in numpy, to separate the
algorithm's gain from the matrix-product speed of OpenBLAS versus heft's Go
kernel. It is informational and not written to the JSON file.
"""
import argparse
import json
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("npy")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--randomized", type=int, default=-1, metavar="Q",
                    help="also time a numpy randomized SVD with Q power iterations")
    args = ap.parse_args()

    a = np.load(args.npy)
    if a.dtype != np.float32 or a.ndim != 2:
        raise SystemExit(f"want a 2-D float32 array, got {a.dtype} {a.shape}")
    r = min(args.rank, *a.shape)
    times = []
    for _ in range(max(args.reps, 1)):
        t0 = time.perf_counter()
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        ur, sr, vtr = u[:, :r], s[:r], vt[:r]
        times.append(time.perf_counter() - t0)
    best = min(times)

    err = float(np.linalg.norm(a - (ur * sr) @ vtr))
    s64 = s.astype(np.float64)
    optimum = float(np.sqrt(np.sum(s64[r:] ** 2)))
    frob = float(np.linalg.norm(a.astype(np.float64)))
    print(f"delta {a.shape[0]}x{a.shape[1]} float32, rank {r}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"numpy svd(full_matrices=False) + truncation: best {best:.3f} s over {len(times)} runs")
    print(f"numpy error ||delta - U S Vt||_F = {err:.6g} (relative {err / frob:.6f}); "
          f"exact optimum from its singular values {optimum:.6g}")
    print("numpy s head: " + " ".join(f"{v:.6g}" for v in s64[:5]))
    if args.randomized >= 0:
        randomized(a, r, args.randomized, optimum)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rank": r, "seconds": best, "error": err, "optimum": optimum,
                       "frob": frob, "singular": [float(v) for v in s64[:16]]}, f, indent=1)


def randomized(a, r, q, optimum):
    l = min(r + max(10, r // 4), *a.shape)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    omega = rng.standard_normal((a.shape[1], l), dtype=np.float32)
    y, _ = np.linalg.qr(a @ omega)
    for _ in range(q):
        z, _ = np.linalg.qr(a.T @ y)
        y, _ = np.linalg.qr(a @ z)
    b = y.T @ a
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    u = y @ ub[:, :r]
    s, vt = s[:r], vt[:r]
    el = time.perf_counter() - t0
    err = float(np.linalg.norm(a - (u * s) @ vt))
    print(f"numpy randomized SVD (p={l - r}, q={q}): {el:.3f} s, error {err:.6g}, "
          f"ratio to the optimum {err / optimum:.5f}")


if __name__ == "__main__":
    main()
