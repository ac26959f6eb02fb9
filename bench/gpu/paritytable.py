#!/usr/bin/env python3
"""paritytable.py LOG: the table of bench/gpu/parity.sh from `pjrtgpu.test -test.v`.

The parity tests of ops/internal/pjrtgpu log one line per case,
"parity<TAB>Test<TAB>case<TAB>result" (device_test.go: parityResult). This
groups the cases by kernel and format, and adds a row for every test that
logs no cases (from its --- PASS/FAIL line). Prints Markdown; exits 1 when a
case or a test failed.
"""
import re
import sys
from collections import OrderedDict

WHAT = {
    "TestDequantFP8Parity": "FP8 E4M3 block dequant (kernel the device chose)",
    "TestDequantKernels": "FP8 block dequant, each kernel",
    "TestDequantPack": "FP8 block dequant, BF16 stored as u32 pairs",
    "TestDequantizeBatch": "FP8 block dequant, 8 modules in one program",
    "TestDequantIntParity": "INT8 / W4A16 dequant",
    "TestDequantGeneralParity": "general dequant kernel",
    "TestDequantGeneralMalformed": "general dequant, mutated modules (device identical or refuses like the CPU)",
    "TestQuantizeFP8Parity": "quantize",
    "TestQuantizeIntParity": "quantize",
    "TestReduceParity": "merge W+s·B·A, ‖X‖, cos(X,Y), cos(X,B·A) (stated bounds)",
    "TestTruncatedSVDAccuracy": "randomized SVD vs exact optimum (≤1.01×)",
    "TestTruncatedSVDMatchesCPU": "randomized SVD: same σ and iterations as the CPU",
    "TestTruncatedSVDUnsupported": "SVD: NaN / exact path / rank 0 / malformed refused",
    "TestDequantIntUnsupported": "INT dequant: malformed inputs refused",
    "TestOrthRows": "Newton–Schulz orthonormalization (graded, rank-deficient, zero)",
    "TestBigRank256": "randomized SVD at rank 256 (l=320) vs optimum",
}

EDGES = ["every code", "every exponent", "edge scales", "partial", "odd blocks", "denormal", "subnormal", "tiny",
         "large", "huge", "NaN", "Inf", "±448", "saturation", "zero ", "zero-point words", "ties", "underflow", "scale 0 ", "7.7e-41", "65504",
         "overflow", "one block", "one group", "group wider", "near the F16", "random", "refused", "correlated",
         "parallel", "orthogonal", "odd shapes", "short", "out+8", "in+1", "group 7", "block 3x5", "strategy", "bits 3"]


def family(test, name):
    """The row a case belongs to within its test."""
    if test in ("TestDequantKernels", "TestDequantPack"):
        m = re.match(r"(kernel \S+(?: packed)?|auto packed|batch packed):", name)
        return m.group(1) if m else "other"
    if test == "TestDequantizeBatch":
        return "batch"
    if test == "TestDequantIntParity":
        m = re.match(r"(int8|w4a16) .*per (channel|group \d+).*asym=(true|false)", name)
        if m:
            return f"{m.group(1)} per {m.group(2).split()[0]}" + (", asymmetric" if m.group(3) == "true" else "")
        return "int"
    if test == "TestDequantGeneralParity":
        if name.startswith("awq"):
            return "AWQ GEMM 4-bit (qzeros / none)"
        if "E8M0" in name:
            return "FP8 E4M3 block, E8M0 scales"
        m = re.search(r"(F8_E4M3|F8_E5M2) (tensor|channel|block)", name)
        if m:
            return f"FP8 {m.group(1)[3:]} per {m.group(2)}"
        if "quanto" in name:
            return "quanto qint8"
        if "int8 per tensor" in name:
            return "int8 per tensor, F32 zero point"
        if "act-order" in name:
            return "act-order g_idx (" + name.split()[0] + ")"
        m = re.search(r"(\d)-bit", name)
        if m and "packed" in name:
            return f"packed {m.group(1)}-bit"
        if name.startswith(("int8", "w4a16")):
            return name.split()[0] + " → F16"
        return "other"
    if test in ("TestQuantizeFP8Parity", "TestQuantizeIntParity"):
        scheme = name.split(": ", 1)[-1]
        m = re.search(r"(fp8-block|int8|w4a16)( group \d+| per-channel)?( asymmetric)?", scheme)
        fam = m.group(0) if m else scheme
        fam = re.sub(r"fp8-block \d+x\d+", "fp8-block", fam)
        fam = re.sub(r"fp8-block", "fp8-block", fam)
        if m and m.group(1) == "fp8-block":
            fam += " (native fp8)" if "native" in scheme else " (compressed-tensors)"
        elif m and m.group(1) == "w4a16":
            fam = "w4a16" + (" asymmetric" if m.group(3) else " symmetric")
        return fam
    return ""


def outputs(name):
    m = re.findall(r"→ (BF16|F16|F32)", name)
    return m[-1] if m else ""


def main():
    lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
    rows = OrderedDict()  # (test, family) -> dict
    tests = OrderedDict()  # test -> (status, seconds)
    failed = False
    for ln in lines:
        m = re.match(r"\s*\S+\.go:\d+: parity\t(\S+)\t(.*)\t(.*)$", ln)
        if m:
            test, name, result = m.groups()
            r = rows.setdefault((test, family(test, name)), {"n": 0, "ok": 0, "refused": 0, "allowed": 0, "bad": [], "out": set(), "edges": [], "notes": []})
            r["n"] += 1
            o = outputs(name)
            if o:
                r["out"].add(o)
            for e in EDGES:
                if e in name and e.strip() not in r["edges"]:
                    r["edges"].append(e.strip())
            if result in ("identical",) or result.startswith("within bounds"):
                r["ok"] += 1
                rm = re.search(r"error ([0-9.]+)× the optimum", result)
                if rm:
                    r["notes"].append(float(rm.group(1)))
            elif result in ("refused by both", "left to the CPU"):
                r["refused"] += 1
            elif result.startswith("differs") and "allowed" in result:
                r["allowed"] += 1
            else:
                r["bad"].append(f"{name}: {result}")
            continue
        m = re.match(r"\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)", ln)
        if m:
            tests[m.group(2)] = (m.group(1), float(m.group(3)))
    print("| test | kernel / format | cases | result | outputs | edge cases |")
    print("|---|---|---|---|---|---|")
    seen = set()
    for (test, fam), r in rows.items():
        seen.add(test)
        status = tests.get(test, ("?", 0))[0]
        if r["bad"]:
            failed = True
            res = f"**FAIL** {len(r['bad'])} of {r['n']}: " + "; ".join(r["bad"][:3])
        else:
            word = "within bounds" if test in ("TestReduceParity", "TestTruncatedSVDAccuracy") else "bit-identical"
            res = f"{r['ok']}/{r['n']} {word}"
            if r["refused"]:
                res = f"{r['ok']} {word}, {r['refused']} refused by both" if "Quantize" in test else f"{r['ok']} {word}, {r['refused']} left to the CPU"
            if r["allowed"]:
                res += f", {r['allowed']} differ (kernel not chosen where its probe fails)"
            if r["notes"]:
                res += f", worst {max(r['notes']):.5f}×"
        what = WHAT.get(test, test)
        label = f"{what}: {fam}" if fam else what
        print(f"| {test} | {label} | {r['n']} | {res} | {'/'.join(sorted(r['out']))} | {', '.join(r['edges'])} |")
    for test, (status, secs) in tests.items():
        if status == "FAIL":
            failed = True
        if test in seen or test not in WHAT:
            if status == "FAIL" and test in seen:
                print(f"| {test} | {WHAT.get(test, test)} | | **test FAILED** | | |")
            continue
        print(f"| {test} | {WHAT[test]} | | {status} ({secs:.1f} s) | | |")
    fails = [t for t, (s, _) in tests.items() if s == "FAIL"]
    print()
    print(f"{len(tests)} tests: {sum(1 for s, _ in tests.values() if s == 'PASS')} passed, {len(fails)} failed"
          + (f" ({', '.join(fails)})" if fails else "") + f", {sum(1 for s, _ in tests.values() if s == 'SKIP')} skipped")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
