"""torch baseline for gpubench: mergekit-style LoRA extraction on the same card.

For each delta (.npy, float32, as gpubench writes them) it times what
mergekit-extract-lora does (formats.md §11): torch.linalg.svd(delta,
full_matrices=False) on the GPU, then the rank-r truncation and the factor
split, and measures the relative error ||delta - B·A||_F / ||delta||_F of the
truncated factors. The exact optimum sqrt(sum_{i>r} s_i^2) / ||delta||_F comes
from torch.linalg.svdvals in float64 on the GPU (--no-f64: from the float32
SVD's singular values, also always reported as opt_rel_error_f32).

Usage: python gpubench.py --rank 256 delta_q_proj.npy ...
Prints one JSON document on stdout.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch


def sync():
    torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--f64", action=argparse.BooleanOptionalAction, default=True,
                    help="exact optimum from float64 singular values (else from the float32 SVD's)")
    ap.add_argument("deltas", nargs="+")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpubench.py: no CUDA device for torch", file=sys.stderr)
        sys.exit(1)
    dev = torch.device("cuda")
    # Warm up cuSOLVER on a small problem so the first module is not charged for it.
    torch.linalg.svd(torch.randn(512, 256, device=dev), full_matrices=False)
    sync()
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rank": args.rank, "modules": []}
    r = args.rank
    for path in args.deltas:
        host = torch.from_numpy(np.load(path, mmap_mode="r").copy())
        sync()
        t0 = time.perf_counter()
        delta = host.to(dev)
        sync()
        h2d = time.perf_counter() - t0
        t0 = time.perf_counter()
        u, s_all, vh = torch.linalg.svd(delta.float(), full_matrices=False)
        u, s, vh = u[:, :r], s_all[:r], vh[:r, :]
        # mergekit splits the singular values evenly between the factors.
        sq = torch.sqrt(s)
        lora_b = u * sq
        lora_a = sq[:, None] * vh
        sync()
        svd_s = time.perf_counter() - t0
        norm = torch.linalg.norm(delta).item()
        err = torch.linalg.norm(delta - lora_b @ lora_a).item() / norm
        opt32 = torch.sqrt(torch.sum(s_all[r:].double() ** 2)).item() / norm
        del u, s, vh, lora_a, lora_b, s_all
        entry = {"file": path, "shape": list(delta.shape), "h2d_s": h2d, "svd_s": svd_s,
                 "rel_error": err, "opt_rel_error_f32": opt32}
        if args.f64:
            t0 = time.perf_counter()
            sv = torch.linalg.svdvals(delta.double())
            entry["opt_rel_error"] = torch.sqrt(torch.sum(sv[r:] ** 2)).item() / torch.linalg.norm(delta.double()).item()
            sync()
            entry["svdvals_f64_s"] = time.perf_counter() - t0
            del sv
        else:
            entry["opt_rel_error"] = opt32
        out["modules"].append(entry)
        del delta
        torch.cuda.empty_cache()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
