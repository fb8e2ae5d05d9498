"""The function vector's head map (every head's causal indirect effect) by the cached fast path, against the naive
full-forward patching of the same heads in the same run; and attribution patching of every head.

    python bench/function_vectors.py [--model smollm2-135m] [--task antonyms] [--k 10] [--prompts 16]
                                     [--naive-layers 2]

The fast path runs the prompts once into a key/value cache and patches each layer's heads together on the last
token alone; the naive reference runs every prompt in full once per head. The naive run covers the first
``--naive-layers`` layers (every head of them): the ratio is per head, and both must agree within 1e-4 there.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="antonyms")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--naive-layers", type=int, default=2)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from core.interventions.patching import patch
    from core.mechanism import vectors as V
    from core.mechanism.run import _batch, _configs
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import load_builtin

    handle = load_model(ModelSpec(model=args.model))
    task = load_builtin(args.task)
    icl_cfg, _ = _configs(args.k, args.prompts, 0)
    clean = _batch(handle, task, icl_cfg)
    shuffled = _batch(handle, task, replace(icl_cfg, perturb="random"))
    means = V.head_outputs(handle, clean)
    n_layers, n_heads = means.shape[:2]

    t0 = time.perf_counter()
    fast = V.head_indirect_effects(handle, shuffled, means)
    t_fast = time.perf_counter() - t0

    sub = means[: args.naive_layers]
    t0 = time.perf_counter()
    naive = V.head_indirect_effects_naive(handle, shuffled, sub)
    t_naive = time.perf_counter() - t0
    per_head_naive = t_naive / sub[:, :].shape[0] / n_heads
    per_head_fast = t_fast / (n_layers * n_heads)

    # attribution patching of every head (and the residual stream) for one clean/corrupted pair of the task
    prompt = task.template.render(task.rows("test")[0])
    other = task.template.render(task.rows("test")[1])
    answer = task.template.target_delimiter + task.gold(task.rows("test")[0])
    t0 = time.perf_counter()
    try:
        res = patch(handle, prompt, other, answer)
        t_patch, atp = time.perf_counter() - t0, {"residual": res.rank_correlation("residual"),
                                                  "heads": res.rank_correlation("heads")}
    except Exception as exc:  # noqa: BLE001 - e.g. the two queries tokenize to different lengths
        t_patch, atp = None, {"error": str(exc)}
    out = {"model": args.model, "task": args.task, "k": args.k, "prompts": len(clean.last),
           "prompt_tokens_max": int(clean.last.max()) + 1, "heads": n_layers * n_heads,
           "fast_seconds_all_heads": round(t_fast, 2), "naive_seconds_for": f"{sub.shape[0] * n_heads} heads",
           "naive_seconds": round(t_naive, 2),
           "ratio_naive_over_fast_per_head": round(per_head_naive / per_head_fast, 1),
           "max_abs_diff": float(np.abs(fast[: args.naive_layers] - naive).max()),
           "top_heads": [list(h) for h in V.top_heads(fast, 6)],
           "patching_with_attribution_patching_seconds": None if t_patch is None else round(t_patch, 2),
           "attribution_patching_rank_correlation": atp,
           "threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
