"""Integrated gradients against the plain forward+backward passes it is made of.

    python bench/attribution_ig.py [--steps 50] [--tokens 128] [--shape gpt2]

A GPT-2-shaped model (124M parameters, random weights: no download), a 128-token
prompt and a one-token target. Ours: ``attribute(..., method="ig", n_steps=50)``.
Reference, in the same run: 50 forward+backward passes of the same model on the
same sequence, batched the same way, with gradients taken w.r.t. the embeddings
only (the floor any IG implementation pays).
Prints the ratio ours / reference.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    from core.attribution.attribute import attribute, internal_batch_size
    from core.models.loading import load_model
    from core.build.synthetic import build_tokenizer
    from core.models.types import ModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        tok = build_tokenizer()
        GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024)).save_pretrained(tmp)
        tok.model_max_length = 1024
        tok.save_pretrained(tmp)
        h = load_model(ModelSpec(tmp, device=args.device, dtype=args.dtype))
        prompt = " ".join(f"w{i % 500}" for i in range(args.tokens - 1))  # + BOS = args.tokens
        n = len(h.tokenizer(prompt)["input_ids"]) + 1
        bs = internal_batch_size(h, n, args.steps)

        def ours():
            return attribute(h, prompt, " w7", "ig", "token", n_steps=args.steps)

        ids = torch.tensor([h.tokenizer(prompt + " w7")["input_ids"]], device=h.device)
        target_id = h.tokenizer(" w7", add_special_tokens=False)["input_ids"][0]
        emb = h.model.get_input_embeddings()

        def reference():  # the same number of forward+backward passes, batched alike; gradients
            done = 0      # w.r.t. the embeddings only (no weight gradients), as IG needs
            while done < args.steps:
                b = min(bs, args.steps - done)
                e = emb(ids.expand(b, -1)).detach().requires_grad_(True)  # (b, T, H)
                logits = h.model(inputs_embeds=e).logits[:, -2]
                torch.autograd.grad(torch.log_softmax(logits.float(), -1)[:, target_id].sum(), e)
                done += b

        ours(), reference()  # warm up
        t_ours, t_ref = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter(); res = ours(); t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); reference(); t_ref.append(time.perf_counter() - t0)
        gap = res.target_logprob - res.baseline_logprob
    print(json.dumps({
        "model_params": h.info.n_params, "tokens": n, "ig_steps": args.steps, "internal_batch_size": bs,
        "device": h.info.device, "dtype": h.info.dtype, "threads": torch.get_num_threads(),
        "ig_s": round(statistics.median(t_ours), 3), "reference_fwd_bwd_s": round(statistics.median(t_ref), 3),
        "ratio": round(statistics.median(t_ours) / statistics.median(t_ref), 3),
        "completeness_error": abs(float(res.scores.sum()) - gap) / max(abs(gap), 1e-12),
    }, indent=2))


if __name__ == "__main__":
    main()
