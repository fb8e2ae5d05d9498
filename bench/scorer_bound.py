"""The few-shot scorer against its compute bound, on a GPT-2-shaped 124M model (random weights), 200 queries x 2
one-token choices, lm-eval's layout.

    python bench/scorer_bound.py [--ks 8 32] [--queries 200]

The bound is a plain batched forward pass of the very rows the scorer runs (the tokens after the shared prefix),
each batch given the prefix's key/value cache already repeated for its rows (prepared outside the timer), with
the same logits_to_keep. FLOPs are counted for those rows: 2 x (non-embedding parameters) per token, plus the
attention's 4 x layers x width x (query tokens x keys). Prints both times, both FLOP/s and their ratio.
Since the scorer stopped copying the prefix for every row (core/fewshot/prefix_attention.py) it runs faster than
that bound, so a floor is measured too: the dense layers' matrix products alone, with the model's weights, on
the same number of (padded) query tokens — what no implementation of this forward can go under.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    from fewshot_speed import build_model, write_task
    from core.fewshot import scoring
    from core.fewshot.demos import build_prompt, demonstrations, template_of
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import Template, read_table, task_from_tables
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = build_model(tmp / "gpt2")
        train, test = write_task(tmp, max(a.ks) + 8, a.queries)
        handle = load_model(ModelSpec(str(folder), dtype="float32"))
        model, tok = handle.model, handle.tokenizer
        cfg = model.config
        n_layers, width = cfg.n_layer, cfg.n_embd
        dense = sum(p.numel() for n, p in model.named_parameters() if "wte" not in n and "wpe" not in n)
        task = task_from_tables(read_table(train), read_table(test), Template("Review: {text}\nSentiment:"),
                                "label", ["positive", "negative"])
        print(f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} threads")
        for k in a.ks:
            config = FewShotConfig(k=k, selection="first")
            tpl = template_of(task, config)
            demos = demonstrations(task, config)
            prompts = [build_prompt(tpl, demos, tpl.render(r)) for r in task.rows("test")]
            conts = [[" positive", " negative"]] * len(prompts)
            t0 = time.perf_counter()
            scores = scoring.score_continuations(model, tok, prompts, conts)
            ours = time.perf_counter() - t0
            # the bound: the same rows, the prefix cache ready for each batch
            ctx_ids, cont_ids = scoring._encode_all(tok, prompts, conts)
            n_prefix = scoring._common_prefix(ctx_ids)
            cache = scoring._run_prefix(model, ctx_ids[0][:n_prefix])
            rows = [c[n_prefix:] for c in ctx_ids]
            order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
            lengths = [len(r) for r in rows]
            batches = list(scoring._batches(order, lengths, scoring.BATCH_TOKENS, n_prefix))
            prepared = []
            for b in batches:
                c = copy.deepcopy(cache)
                c.batch_repeat_interleave(len(b))
                width_b = max(lengths[i] for i in b)
                ids = torch.zeros((len(b), width_b), dtype=torch.long)
                for j, i in enumerate(b):
                    ids[j, :lengths[i]] = torch.tensor(rows[i])
                keep = torch.tensor(sorted({lengths[i] - 1 for i in b}))
                prepared.append((ids, c, keep))
            t0 = time.perf_counter()
            with torch.no_grad():
                for ids, c, keep in prepared:
                    model(ids, cache=c, logits_to_keep=keep)
            bound = time.perf_counter() - t0
            # the floor: only the dense layers' matrix products on the same (padded) query tokens, nothing else
            mats = [(blk.attn.c_attn.weight, blk.attn.c_proj.weight, blk.mlp.c_fc.weight, blk.mlp.c_proj.weight)
                    for blk in model.transformer.h]
            xs = [torch.randn(ids.numel(), width) for ids, _, _ in prepared]
            t0 = time.perf_counter()
            with torch.no_grad():
                for x in xs:
                    for qkv, out, up, down in mats:
                        x @ qkv, x @ out, (x @ up) @ down
            gemm = time.perf_counter() - t0
            q_tokens = sum(ids.numel() for ids, _, _ in prepared)
            flops = 2 * dense * q_tokens + sum(4 * n_layers * width * ids.numel() * (n_prefix + ids.shape[1])
                                               for ids, _, _ in prepared)
            print(f"k={k}: prefix {n_prefix} tokens, {len(rows)} rows in {len(batches)} batches, {q_tokens} query "
                  f"tokens, {flops / 1e9:.1f} GFLOP; ours {ours:.2f} s ({flops / ours / 1e9:.1f} GFLOP/s), bound "
                  f"{bound:.2f} s ({flops / bound / 1e9:.1f} GFLOP/s): ours {bound / ours:.2f}x as fast as the bound; "
                  f"the dense layers' matrix products alone {gemm:.2f} s: ours takes {ours / gemm:.2f}x that "
                  f"(scores checked: {scores.logprob.shape})")


if __name__ == "__main__":
    main()
