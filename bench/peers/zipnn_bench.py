#!/usr/bin/env python3
"""zipnn_bench.py: the peers of heft's chunk codecs on the same tensors.

    bench/peers/.venv/bin/python bench/peers/zipnn_bench.py --label "MiniLM F32" FILE.safetensors...

Reads the floating-point tensors of the safetensors files (the same bytes
codecbench reads) and measures, on one core:

  zipnn     ZipNN(input_format="byte", bytearray_dtype=<"bfloat16"|"float16"|
            "float32">, method="AUTO", threads=1, compression_chunk=C), the
            settings zipnn documents for byte input of each dtype (byte
            grouping plus sign-bit reordering, Huffman per chunk). Each
            tensor is compressed whole in one call (zipnn cuts it into its own
            chunks of C bytes); C is picked per data set from --zipnn-chunks
            as the one with the smallest output (zipnn's default is 256 KiB;
            it keeps 1 - 5 % raw chunks above 256 KiB for BF16, so larger
            values are worse).
  zstd -3   the Debian zstd CLI, `zstd -3 -T1`, on the tensors' bytes
  zstd -19  concatenated into one file (one frame: zstd's best case), and
            `zstd -d -T1` back.

Every output is decoded and compared with the source bytes (exit 1 on a
mismatch). Speeds are raw bytes per second of CPU time (user+sys of this
process for zipnn, of the zstd child for the CLI), so per core even on a
shared machine; wall-clock speeds are reported too (*_wall_gbps). Each is the
best of --reps measurements of at least --min-time seconds of CPU time
(fewer for a codec whose single pass takes longer than --max-time).

Note: zipnn 0.5.4 rewrites its input buffer in place while compressing (its
C core reorders the float bits in the caller's buffer, even a `bytes`
object). Each compression here therefore gets a fresh copy of the tensor,
made outside the timed region.

Output: one JSON object per line on stdout, as codecbench; a summary on
stderr.
"""

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings

warnings.simplefilter("ignore")  # torch's FutureWarnings when zipnn imports it

try:
    from zipnn import ZipNN
except ImportError as e:  # pragma: no cover
    sys.exit(f"zipnn_bench.py: {e}; run bench/peers/setup.sh and use bench/peers/.venv/bin/python")

ZIPNN_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def log(msg):
    print("zipnn_bench.py: " + msg, file=sys.stderr, flush=True)


def load(paths):
    """Return [(name, dtype, bytes)] of every non-empty tensor, in file order."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        header.pop("__metadata__", None)
        for name, t in sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])):
            b, e = t["data_offsets"]
            if e == b:
                continue
            if t["dtype"] not in ZIPNN_DTYPES:
                sys.exit(f"zipnn_bench.py: {p}: tensor {name} is {t['dtype']}; only {', '.join(ZIPNN_DTYPES)} are benchmarked")
            out.append((name, t["dtype"], data[b:e]))
    if not out:
        sys.exit("zipnn_bench.py: no tensor data in " + ", ".join(paths))
    return out


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(raw, run_pass, min_time, reps, max_time):
    """Best (cpu GB/s, wall GB/s) over reps measurements. run_pass() returns
    the (cpu, wall) seconds of one timed pass over all the data."""
    best_cpu = best_wall = 0.0
    spent = 0.0
    for _ in range(reps):
        n, cpu, wall = 0, 0.0, 0.0
        while n == 0 or cpu < min_time:
            c, w = run_pass()
            n, cpu, wall = n + 1, cpu + c, wall + w
        best_cpu = max(best_cpu, raw * n / cpu / 1e9)
        best_wall = max(best_wall, raw * n / wall / 1e9)
        spent += cpu
        if spent / (_ + 1) > max_time:  # one measurement takes long: it is stable enough
            break
    return best_cpu, best_wall


def make_zipnn(dtype, chunk):
    return ZipNN(method="AUTO", input_format="byte", bytearray_dtype=ZIPNN_DTYPES[dtype], threads=1, compression_chunk=chunk)


def bench_zipnn(label, tensors, raw, args):
    # Pick the compression chunk with the best ratio (one untimed pass each).
    best = None
    for chunk in args.zipnn_chunks:
        stored = 0
        for _, dt, b in tensors:
            stored += len(make_zipnn(dt, chunk).compress(bytearray(b)))
        log(f"zipnn compression_chunk {chunk >> 10} KiB: stored/raw {stored / raw:.4f}")
        if best is None or stored < best[1]:
            best = (chunk, stored)
    chunk = best[0]
    zs = {dt: make_zipnn(dt, chunk) for dt in {dt for _, dt, _ in tensors}}

    def compress_pass():
        copies = [bytearray(b) for _, _, b in tensors]  # zipnn overwrites its input
        c0, w0 = cpu_self(), time.perf_counter()
        out = [zs[dt].compress(c) for (_, dt, _), c in zip(tensors, copies)]
        c, w = cpu_self() - c0, time.perf_counter() - w0
        compress_pass.out = out
        return c, w

    compress_pass()
    out = compress_pass.out
    stored = sum(len(o) for o in out)
    for (name, dt, b), o in zip(tensors, out):
        if bytes(zs[dt].decompress(o)) != b:
            sys.exit(f"zipnn_bench.py: zipnn does not round-trip tensor {name} bit-exactly")

    def decompress_pass():
        c0, w0 = cpu_self(), time.perf_counter()
        for (_, dt, _), o in zip(tensors, out):
            zs[dt].decompress(o)
        return cpu_self() - c0, time.perf_counter() - w0

    enc, enc_wall = measure(raw, compress_pass, args.min_time, args.reps, args.max_time)
    dec, dec_wall = measure(raw, decompress_pass, args.min_time, args.reps, args.max_time)
    return row(label, "zipnn", raw, stored, enc, dec, enc_wall, dec_wall,
               f"per tensor, compression_chunk {chunk >> 10} KiB, threads=1")


def run_child(cmd, stdin_path, stdout_path):
    c0, w0 = cpu_children(), time.perf_counter()
    with open(stdin_path, "rb") as fin, open(stdout_path, "wb") as fout:
        subprocess.run(cmd, stdin=fin, stdout=fout, check=True)
    return cpu_children() - c0, time.perf_counter() - w0


def bench_zstd(label, tensors, raw, level, tmp, args):
    src = os.path.join(tmp, "data.bin")
    if not os.path.exists(src):
        with open(src, "wb") as f:
            for _, _, b in tensors:
                f.write(b)
    comp = os.path.join(tmp, f"data.{level}.zst")
    back = os.path.join(tmp, "data.back")
    zstd = ["zstd", "-q", f"-{level}", "-T1", "-c"]
    first = run_child(zstd, src, comp)  # also the output that is checked
    stored = os.path.getsize(comp)
    run_child(["zstd", "-q", "-d", "-T1", "-c"], comp, back)
    with open(back, "rb") as f:
        back_bytes = f.read()
    with open(src, "rb") as f:
        if f.read() != back_bytes:
            sys.exit(f"zipnn_bench.py: zstd -{level} does not round-trip")
    os.remove(back)
    passes = [first]

    def compress_pass():
        if passes:
            return passes.pop()  # reuse the first, checked run
        return run_child(zstd, src, os.devnull)

    enc, enc_wall = measure(raw, compress_pass, args.min_time, args.reps, args.max_time)
    dec, dec_wall = measure(raw, lambda: run_child(["zstd", "-q", "-d", "-T1", "-c"], comp, os.devnull),
                            args.min_time, args.reps, args.max_time)
    return row(label, f"zstd -{level}", raw, stored, enc, dec, enc_wall, dec_wall,
               "CLI " + subprocess.run(["zstd", "-V"], capture_output=True, text=True).stdout.split(",")[0].split()[-1]
               + ", -T1, whole data set as one frame")


def row(label, tool, raw, stored, enc, dec, enc_wall, dec_wall, note):
    r = dict(dataset=label, tool=tool, raw_bytes=raw, stored_bytes=stored, enc_gbps=enc, dec_gbps=dec,
             enc_wall_gbps=enc_wall, dec_wall_gbps=dec_wall, note=note)
    log(f"{tool:9s} stored/raw {stored / raw:.4f} ({raw / stored:.3f}x)  encode {enc:.2f} GB/s  decode {dec:.2f} GB/s per core"
        f" (wall {enc_wall:.2f} / {dec_wall:.2f})  {note}")
    print(json.dumps(r), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--label", default=None)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of CPU time per measurement")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-time", type=float, default=10.0,
                    help="stop repeating once measurements average this many CPU seconds")
    ap.add_argument("--zipnn-chunks", default="65536,131072,262144",
                    help="compression_chunk values to try for zipnn (powers of two; the best ratio is used)")
    ap.add_argument("--tools", default="zipnn,zstd-3,zstd-19")
    args = ap.parse_args()
    args.zipnn_chunks = [int(x) for x in args.zipnn_chunks.split(",")]
    tools = args.tools.split(",")
    label = args.label or args.files[0]
    if any(t.startswith("zstd") for t in tools) and not shutil.which("zstd"):
        sys.exit("zipnn_bench.py: zstd not found on PATH; run bench/peers/setup.sh (apt-get install zstd)")

    tensors = load(args.files)
    raw = sum(len(b) for _, _, b in tensors)
    log(f"{label}: {len(tensors)} tensors, {raw} bytes")
    with tempfile.TemporaryDirectory(prefix="zipnn-bench-") as tmp:
        for t in tools:
            if t == "zipnn":
                bench_zipnn(label, tensors, raw, args)
            elif t.startswith("zstd-"):
                bench_zstd(label, tensors, raw, int(t[5:]), tmp, args)
            else:
                sys.exit(f"zipnn_bench.py: unknown tool {t}")


if __name__ == "__main__":
    main()
