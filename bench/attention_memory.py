"""Time and peak memory to get one head's attention map on a long input.

    python bench/attention_memory.py [--shape gpt2-large] [--tokens 2048] [--layer 18]

A GPT-2-shaped model with random weights (no download) and a random
2,048-token input. Ours: ``compute_attention(handle, text, layers=[L], heads=[H])``
(hooks keep one layer and stop after it). Reference in the same run:
``model(ids, output_attentions=True)`` under eager attention, the plain way,
which holds every layer's weights. Each runs in its own subprocess; after loading, the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), so ``extra_gb``
is the memory the computation itself added at its peak. Linux only; prints one
JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {  # layers, width, heads
    "gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16), "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}

WORKER = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
mode, folder, T, layer = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
from core.models.loading import load_model
from core.models.types import ModelSpec
handle = load_model(ModelSpec(folder))
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to what is resident now
base = status_kb("VmRSS")
ids = torch.randint(0, handle.info.vocab_size, (1, T))
t0 = time.perf_counter()
if mode == "ours":
    from core.attention.capture import compute_attention, _capture
    keep = {{}}
    def take(i, w):
        keep[i] = w[0, 0].float().cpu().numpy()  # one head: (q, k)
    _capture(handle, {{"input_ids": ids}}, [layer], take)
    m = keep[layer]
else:
    handle.model.set_attn_implementation("eager")
    with torch.no_grad():
        out = handle.model(ids, output_attentions=True)
    m = out.attentions[layer][0, 0].numpy()
dt = time.perf_counter() - t0
peak = status_kb("VmHWM")
print(json.dumps({{"seconds": dt, "peak_rss_gb": peak / 2**20, "model_rss_gb": base / 2**20,
                  "extra_gb": (peak - base) / 2**20, "row_sum": float(m[-1].sum())}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-large")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--layer", type=int, help="default: the middle layer")
    args = ap.parse_args()
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, width, heads = SHAPES[args.shape]
    layer = n_layer // 2 if args.layer is None else args.layer
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = GPT2Config(n_positions=args.tokens, n_embd=width, n_layer=n_layer, n_head=heads)
        GPT2LMHeadModel(cfg).save_pretrained(tmp)
        sys.path.insert(0, str(ROOT))
        from core.build.synthetic import build_tokenizer
        build_tokenizer().save_pretrained(tmp)  # loading needs one; the worker feeds ids directly
        code = WORKER.format(root=str(ROOT))
        results = {}
        for mode in ("ours", "reference"):
            proc = subprocess.run([sys.executable, "-c", code, mode, tmp, str(args.tokens), str(layer)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                results[mode] = {"error": proc.stderr.strip().splitlines()[-1]}
            else:
                results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    n_params = sum(p.numel() for p in GPT2LMHeadModel(cfg).parameters())
    out = {"shape": args.shape, "n_params": n_params, "tokens": args.tokens, "layer": layer,
           "threads": torch.get_num_threads(), **{k: v for k, v in results.items()}}
    if "seconds" in results.get("reference", {}) and "seconds" in results["ours"]:
        out["time_ratio_ours_over_reference"] = round(results["ours"]["seconds"] / results["reference"]["seconds"], 3)
        out["extra_memory_ratio_ours_over_reference"] = round(
            results["ours"]["extra_gb"] / max(1e-9, results["reference"]["extra_gb"]), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
