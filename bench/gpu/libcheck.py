"""Real-library checks of heft's quantized, dequantized, adapter and merged outputs.

Runs the heft binary on a tiny transformers Qwen3 family and checks its outputs
with the libraries that consume them (issue 4's acceptance on the GPU machine,
which has torch, transformers and peft; compressed-tensors is installed from a
wheel carried along):

  1. compressed-tensors' own decompressor (CompressedTensorsDequantizer,
     FP8BlockDequantizer for native fp8) on heft's quantized outputs gives heft's
     dequantized values bit for bit;
  2. heft reads and dequantizes models written by compressed-tensors' compressor
     (scales from its calculate_qparams, tensors from its compressors) bit for bit;
  3. transformers loads heft's BF16 outputs (bridges, merged model) with no
     missing or unexpected keys and runs a forward pass;
  4. PEFT loads heft's adapter, and PEFT's merge_and_unload equals heft lora merge
     up to PEFT's extra rounding (it rounds the delta to BF16 before adding).

Usage: python libcheck.py --heft PATH/TO/heft --work DIR [--device cuda|cpu]
Prints a JSON report; exits 1 when a check fails.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file, save_file

failures = []
report = {}


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    failures.append(msg)


def heft(args, store, *cmd):
    out = subprocess.run([args.heft, "--store", store, "--json", *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"heft {' '.join(cmd)}: exit {out.returncode}: {out.stderr}")
    return json.loads(out.stdout) if out.stdout.strip() else None


def load_dir(d):
    t = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            t.update(load_file(os.path.join(d, f)))
    return t


def bits(t):
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


def tiny_family(work):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1, head_dim=128, vocab_size=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    base = os.path.join(work, "base")
    model.save_pretrained(base)
    # A fine-tune: a rank-8 change plus noise on every Linear weight.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name and "lm_head" not in name:
                out, inp = p.shape
                low = torch.randn(out, 8, generator=g) @ torch.randn(8, inp, generator=g)
                d = 0.002 * low / 8 ** 0.5 + 0.0005 * torch.randn(out, inp, generator=g)
                p.copy_((p.float() + d).to(torch.bfloat16))
    tuned = os.path.join(work, "tuned")
    model.save_pretrained(tuned)
    return base, tuned


def check_ct_decompress(args, store, work):
    """1. compressed-tensors decompresses heft's quantized outputs to heft's bridge."""
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    try:
        from compressed_tensors.entrypoints.convert.converters.fp8block_dequantizer import FP8BlockDequantizer
    except ImportError:
        FP8BlockDequantizer = None
    cases = [("fp8-block", ["--scheme", "fp8-block"]), ("fp8-native", ["--scheme", "fp8-block", "--format", "fp8"]),
             ("int8", ["--scheme", "int8"]), ("w4a16", ["--scheme", "w4a16"]),
             ("w4a16-asym", ["--scheme", "w4a16", "--asymmetric"])]
    res = {}
    for label, flags in cases:
        q, dq = f"tiny/{label}", f"tiny/{label}-bridge"
        heft(args, store, "quantize", "tiny/base", "--name", q, *flags)
        heft(args, store, "dequant", q, "--name", dq)
        qdir, dqdir = os.path.join(work, label), os.path.join(work, label + "-bridge")
        heft(args, store, "export", q, qdir)
        heft(args, store, "export", dq, dqdir)
        tensors = load_dir(qdir)
        if label == "fp8-native":
            if FP8BlockDequantizer is None:
                res[label] = "skipped: no FP8BlockDequantizer in this compressed-tensors"
                continue
            # Built from the checkpoint: it targets every module with a
            # weight_scale_inv tensor.
            conv = FP8BlockDequantizer.from_pretrained(qdir)
        else:
            conv = CompressedTensorsDequantizer(qdir)
        deq = conv.process(dict(tensors))
        bridge = load_dir(dqdir)
        n = bad = 0
        for name, t in deq.items():
            if name not in bridge:
                fail(f"{label}: CT produced {name}, heft's bridge lacks it")
                continue
            n += 1
            if t.dtype != bridge[name].dtype or not torch.equal(bits(t.to(bridge[name].dtype)), bits(bridge[name])):
                bad += 1
                fail(f"{label}: {name} differs between compressed-tensors and heft dequant")
        if set(bridge) != set(deq):
            fail(f"{label}: tensor sets differ: {sorted(set(bridge) ^ set(deq))[:4]}")
        res[label] = f"{n} tensors compared, {bad} differ"
    report["ct_decompresses_heft"] = res


def check_ct_written(args, store, work, base_dir):
    """2. heft dequantizes what compressed-tensors' compressor writes."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams

    base = load_dir(base_dir)
    config = json.load(open(os.path.join(base_dir, "config.json")))
    res = {}
    for preset in ["FP8_BLOCK", "W4A16", "W4A16_ASYM", "W8A8", "FP8_DYNAMIC"]:
        scheme = preset_name_to_scheme(preset, ["Linear"])
        scheme.format = CompressionFormat(infer_module_format(torch.nn.Linear, scheme))
        compressor = BaseCompressor.get_value_from_registry(scheme.format.value)
        wa = scheme.weights
        out = {}
        for name, w in base.items():
            if w.ndim != 2 or "embed" in name or "lm_head" in name or not name.endswith(".weight"):
                out[name] = w
                continue
            rows, cols = w.shape
            x = w.float()
            strategy = str(getattr(wa.strategy, "value", wa.strategy))
            if strategy == "block":
                bh, bw = wa.block_structure
                pad = torch.zeros(-(-rows // bh) * bh, -(-cols // bw) * bw)
                pad[:rows, :cols] = x
                blk = pad.reshape(pad.shape[0] // bh, bh, pad.shape[1] // bw, bw)
                mn, mx = blk.amin(dim=(1, 3)), blk.amax(dim=(1, 3))
            elif strategy == "group":
                grp = x.reshape(rows, cols // wa.group_size, wa.group_size)
                mn, mx = grp.amin(dim=2), grp.amax(dim=2)
            elif strategy == "channel":
                mn, mx = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
            else:
                mn, mx = x.amin().reshape(1), x.amax().reshape(1)
            scale, zp = calculate_qparams(mn.to(w.dtype), mx.to(w.dtype), wa)
            sd = {"weight": w, "weight_scale": scale.to(w.dtype), "weight_zero_point": zp}
            comp = compressor.compress(sd, scheme)
            module = name[: -len(".weight")]
            for k, v in comp.items():
                out[f"{module}.{k}"] = v
        # As llm-compressor's model-free path is told to: embeddings and lm_head
        # are not Linear targets (formats.md §5.6).
        qcfg = QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head", "model.embed_tokens"],
                                  quantization_status=QuantizationStatus.COMPRESSED, format=scheme.format.value)
        d = os.path.join(work, "ct-" + preset.lower())
        os.makedirs(d, exist_ok=True)
        save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        cfg = dict(config)
        cfg["quantization_config"] = qcfg.model_dump(mode="json", exclude_none=False)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
        ref = f"ct/{preset.lower().replace('_', '-')}"
        heft(args, store, "import", d, "--name", ref, "--no-recipes")
        show = heft(args, store, "show", ref)
        heft(args, store, "dequant", ref, "--name", ref + "-bridge")
        bdir = d + "-bridge"
        heft(args, store, "export", ref + "-bridge", bdir)
        bridge = load_dir(bdir)
        deq = CompressedTensorsDequantizer(d).process(load_dir(d))
        bad = 0
        for name, t in deq.items():
            if name not in bridge or not torch.equal(bits(t.to(torch.bfloat16)), bits(bridge[name])):
                bad += 1
                fail(f"CT-written {preset}: {name}: heft's dequant differs from compressed-tensors'")
        res[preset] = f"{show.get('quantization', '?')}: {len(deq)} tensors compared, {bad} differ"
    report["heft_reads_ct_written"] = res


def check_transformers_loads(args, work, dirs, device):
    """3. transformers loads heft's BF16 outputs and runs them."""
    from transformers import AutoModelForCausalLM

    res = {}
    ids = torch.tensor([[1, 2, 3, 4, 5]], device=device)
    for label, d in dirs.items():
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, output_loading_info=True)
        problems = {k: v for k, v in info.items() if v}
        if problems:
            fail(f"transformers loading {label}: {problems}")
        files = load_dir(d)
        sd = model.state_dict()
        bad = [n for n, t in files.items() if n in sd and not torch.equal(bits(sd[n]), bits(t))]
        if bad:
            fail(f"transformers {label}: {len(bad)} tensors differ from the files")
        with torch.no_grad():
            logits = model.to(device)(ids).logits
        if not torch.isfinite(logits).all():
            fail(f"transformers {label}: non-finite logits")
        res[label] = f"loaded, {len(files)} tensors, logits {tuple(logits.shape)} finite"
    report["transformers_loads_heft"] = res


def check_peft(args, store, work, base_dir):
    """4. PEFT loads heft's adapter; its merge equals heft lora merge's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    heft(args, store, "lora", "extract", "--base", "tiny/base", "--tuned", "tiny/tuned", "--rank", "16", "--name", "tiny/adapter")
    heft(args, store, "lora", "merge", "--base", "tiny/base", "--adapter", "tiny/adapter", "--name", "tiny/merged")
    adir, mdir = os.path.join(work, "adapter"), os.path.join(work, "merged")
    heft(args, store, "export", "tiny/adapter", adir)
    heft(args, store, "export", "tiny/merged", mdir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
    peft_model = PeftModel.from_pretrained(base, adir)
    n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_" in n)
    merged = peft_model.merge_and_unload().state_dict()
    ours = load_dir(mdir)
    total = differ = 0
    worst = 0.0
    for name, t in ours.items():
        p = merged[name]
        diff = (bits(p).int() - bits(t).int()).abs()
        total += diff.numel()
        differ += int((diff != 0).sum())
        rel = ((p.float() - t.float()).abs() / t.float().abs().clamp_min(1e-8)).max().item()
        worst = max(worst, rel)
        if int(diff.max()) > 1 and rel > 2 ** -7:
            fail(f"PEFT merge {name}: {int(diff.max())} BF16 ulps from heft's merge")
    report["peft"] = {"lora_parameters_loaded": n_lora, "merged_values": total, "differing_by_1_ulp": differ,
                      "max_relative_difference": worst,
                      "note": "PEFT rounds B·A to BF16 before adding it; heft adds in float32 and rounds once"}
    if n_lora != 28:
        fail(f"PEFT loaded {n_lora} LoRA parameters, want 28")
    return mdir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--heft", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    store = os.path.join(args.work, "store")
    start = time.time()
    import compressed_tensors
    import peft
    import transformers

    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                          "compressed_tensors": compressed_tensors.__version__,
                          "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    base_dir, tuned_dir = tiny_family(args.work)
    heft(args, store, "import", base_dir, "--name", "tiny/base")
    heft(args, store, "import", tuned_dir, "--name", "tiny/tuned")
    for step in (lambda: check_ct_decompress(args, store, args.work),
                 lambda: check_ct_written(args, store, args.work, base_dir)):
        try:
            step()
        except Exception as e:  # one failing library must not hide the others
            fail(f"{type(e).__name__}: {e}")
    mdir = None
    try:
        mdir = check_peft(args, store, args.work, base_dir)
    except Exception as e:
        fail(f"PEFT: {type(e).__name__}: {e}")
    try:
        dirs = {"fp8-block bridge": os.path.join(args.work, "fp8-block-bridge"), "w4a16 bridge": os.path.join(args.work, "w4a16-bridge")}
        if mdir:
            dirs["lora-merged"] = mdir
        check_transformers_loads(args, args.work, {k: v for k, v in dirs.items() if os.path.isdir(v)}, args.device)
    except Exception as e:
        fail(f"transformers: {type(e).__name__}: {e}")
    report["seconds"] = round(time.time() - start, 1)
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
