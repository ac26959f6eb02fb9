#!/usr/bin/env python3
"""table.py: render the JSON lines of codecbench and zipnn_bench.py as markdown.

    python3 bench/peers/table.py results.jsonl... > table.md

One row per (dataset, tool), datasets in the order they first appear, tools
in a fixed order. Needs only the standard library.
"""

import json
import math
import sys

TOOLS = ["heft (auto)", "heft bytegrouped", "heft zstd", "zipnn", "zstd -3", "zstd -19"]


def speed(v):
    """GB/s with 3 significant digits (zstd -19 runs at a few MB/s)."""
    if v <= 0:
        return "-"
    digits = max(2, 2 - int(math.floor(math.log10(v))))
    return f"{v:.{digits}f}"


def main():
    rows = []
    for path in sys.argv[1:]:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    if not rows:
        sys.exit("table.py: no results")
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    order = {t: i for i, t in enumerate(TOOLS)}
    rows.sort(key=lambda r: (datasets.index(r["dataset"]), order.get(r["tool"], len(TOOLS)), r["tool"]))

    print("| dataset | tool | stored/raw | ratio | encode GB/s per core | decode GB/s per core | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        raw, st = r["raw_bytes"], r["stored_bytes"]
        print(f"| {r['dataset']} | {r['tool']} | {st / raw:.4f} | {raw / st:.3f}x | {speed(r['enc_gbps'])} | "
              f"{speed(r['dec_gbps'])} | {r.get('note', '')} |")
    print()
    print("Wall-clock speeds of the same runs (one thread; inflated by whatever else the machine ran):")
    print()
    print("| dataset | tool | encode GB/s wall | decode GB/s wall |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['tool']} | {speed(r.get('enc_wall_gbps', 0))} | {speed(r.get('dec_wall_gbps', 0))} |")


if __name__ == "__main__":
    main()
