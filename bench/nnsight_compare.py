"""The interventions through nnsight traces against the project's own hooks, on the same model and inputs: few-shot
log-likelihoods, head ablation, activation patching and the logit lens; the largest difference of each and the wall
time of each path.

    python bench/nnsight_compare.py                                  # nnsight locally, the embedded default model
    python bench/nnsight_compare.py --where simulate                 # nnsight's serialised request, run here
    NDIF_API_KEY=... python bench/nnsight_compare.py --where ndif --model openai-community/gpt2 \\
        --clean "..." --corrupt "..." --target " ..."                # the same model on NDIF (needs its weights here
                                                                     # too, for the hook reference)

``--where ndif`` is the check this project could not run (no network, no key): it prints the same table against
NDIF, so the remote path stops being unverified once someone with a key runs it.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--where", choices=("local", "simulate", "ndif"), default="local")
    ap.add_argument("--task", default="recall")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--heads", default="1.3,0.2", help="heads to ablate (layer.head)")
    ap.add_argument("--clean", default="w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 =")
    ap.add_argument("--corrupt", default="w3 = w17 ; w8 = w40 ; w11 = w5 ; w8 =")
    ap.add_argument("--target", default=" w42")
    a = ap.parse_args()
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.interventions import patching, traced as traced_ops
    from core.interventions.ablation import run_ablated
    from core.interventions.hooks import parse_heads
    from core.models.loading import load_model
    from core.models.traced import load_traced, parse_traced
    from core.models.types import ModelSpec
    from core.tasks import load_builtin

    plain = load_model(ModelSpec(a.model))
    if a.where == "local":
        other = load_model(ModelSpec(f"nnsight:{a.model}"))
    elif a.where == "simulate":
        other = replace(plain, model=load_traced(parse_traced(f"ndif:{a.model}"), plain.model, plain.tokenizer,
                                                 simulate=True))
    else:
        other = load_model(ModelSpec(f"ndif:{a.model}"))
    task = load_builtin(a.task)
    config = FewShotConfig(k=a.k, limit=a.limit, seed=0)
    heads = parse_heads(a.heads, plain.info.n_layers, plain.info.n_heads)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    rows = []

    def logps(run):
        return np.array([e.choice_logprobs for e in run.examples])

    (r1, t1), (r2, t2) = timed(lambda: run_fewshot(plain, task, config)), timed(lambda: run_fewshot(other, task, config))
    rows.append(("few-shot log-likelihoods", np.abs(logps(r1) - logps(r2)).max(), t1, t2,
                 f"accuracy {r1.metrics.accuracy:.3f} / {r2.metrics.accuracy:.3f}"))
    (r1, t1), (r2, t2) = (timed(lambda: run_ablated(plain, task, config, heads)),
                          timed(lambda: run_ablated(other, task, config, heads)))
    rows.append((f"ablation {a.heads} (zero)", np.abs(logps(r1) - logps(r2)).max(), t1, t2,
                 f"accuracy {r1.metrics.accuracy:.3f} / {r2.metrics.accuracy:.3f}"))
    (p1, t1), (p2, t2) = (timed(lambda: patching.patch(plain, a.clean, a.corrupt, a.target)),
                          timed(lambda: traced_ops.patch(other, a.clean, a.corrupt, a.target)))
    diff = max(np.abs(p1.residual - p2.residual).max(), np.abs(p1.heads - p2.heads).max())
    rows.append(("activation patching (restored fraction)", diff, t1, t2,
                 f"log p clean {p1.logprob_clean:.3f} / {p2.logprob_clean:.3f}"))
    (l1, t1), (l2, t2) = (timed(lambda: patching.logit_lens(plain, a.clean, a.target)),
                          timed(lambda: traced_ops.logit_lens(other, a.clean, a.target)))
    rows.append(("logit lens (probabilities)", np.abs(l1.final - l2.final).max(), t1, t2,
                 f"{len(l1.tokens)} positions"))
    print(f"{plain.info.name}: hooks against nnsight ({a.where}), {a.task} k={a.k} on {a.limit} queries")
    print(f"{'operation':42s} {'max |diff|':>11s} {'hooks s':>8s} {'nnsight s':>10s} {'ratio':>6s}  note")
    for name, diff, t1, t2, note in rows:
        print(f"{name:42s} {diff:11.2e} {t1:8.2f} {t2:10.2f} {t2 / t1:6.1f}  {note}")


if __name__ == "__main__":
    main()
