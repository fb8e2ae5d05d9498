"""An emergence sweep over the embedded default model's 13 checkpoints: the lab's sweep against the same work done
the way it was before (every checkpoint re-tokenising every prompt, one text at a time, and a full garbage
collection after each unload), in the same process. Then heads over training on the same checkpoints, looked
at three times as the Emergence tab does (first, again with a head ablated for the ICL score, reopened),
with the kept per-checkpoint captures against measuring everything each time (as before).

    python bench/sweep_speed.py [--task recall] [--k 4] [--seeds 2]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.emergence.series import Cache, heads_over_training, series_points, standalone_borrow, sweep_series  # noqa: E402
from core.fewshot import scoring  # noqa: E402
from core.fewshot.run import run_fewshot  # noqa: E402
from core.fewshot.types import FewShotConfig  # noqa: E402
from core.models.types import ModelSpec  # noqa: E402
from core.tasks import load_builtin  # noqa: E402


def reference(points, task, config, seeds) -> float:
    """Per point: load, score each seed re-encoding every text one call at a time, unload, collect."""
    one_by_one = lambda tok, texts, memo=None: [scoring.encode(tok, t) for t in texts]  # noqa: E731
    real, scoring.encode_many = scoring.encode_many, one_by_one
    try:
        t0 = time.perf_counter()
        borrow = standalone_borrow()
        for p in points:
            with borrow(ModelSpec(model=p.model, revision=p.revision)) as handle:
                for s in seeds:
                    run_fewshot(handle, task, replace(config, seed=s))
            gc.collect()
        return time.perf_counter() - t0
    finally:
        scoring.encode_many = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="recall")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    a = ap.parse_args()
    points = series_points(None, "default")
    task, config, seeds = load_builtin(a.task), FewShotConfig(k=a.k, selection="nearest"), list(range(a.seeds))
    sweep_series(points[:1], task, config, seeds)  # warm-up: imports, first load
    ref = reference(points, task, config, seeds)
    t0 = time.perf_counter()
    sweep_series(points, task, config, seeds)
    ours = time.perf_counter() - t0
    print(f"{len(points)} checkpoints x {len(seeds)} seeds, {a.task} k={a.k}; load average {os.getloadavg()[0]:.1f}: "
          f"sweep {ours:.2f} s, as before {ref:.2f} s, ratio {ref / ours:.2f}x")
    looks = [("first look", ""), ("again, L1.H1 ablated for the ICL score", "1.1"), ("reopened", "1.1")]
    kept = Cache()
    for what, ablate in looks:
        t0 = time.perf_counter()
        heads_over_training(points, ablate=ablate)  # everything measured again, as before
        ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        heads_over_training(points, ablate=ablate, cache=kept)
        ours = time.perf_counter() - t0
        ratio = f"ratio {ref / ours:.1f}x" if ours >= 0.01 else "nothing loaded"
        print(f"heads over training, {what}: {ours:.2f} s, measuring everything {ref:.2f} s, {ratio} "
              f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
