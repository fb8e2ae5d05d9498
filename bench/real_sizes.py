"""The real models by size: SmolLM2-135M against Gemma 3 270M (optional package) through the Emergence lab's sweep.

    python bench/real_sizes.py [--tasks antonyms,capitals,dates,sentiment-hard] [--k 4] [--seeds 2] [--limit 30]

Prints, per task, each model's parameters and metrics (accuracy, log p(gold), Brier, token edit distance) as the
Emergence tab's "Real models by size" preset computes them, then the top head roles of each model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine import Engine  # noqa: E402
from core.emergence.requests import SweepSeriesRequest  # noqa: E402
from core.models.types import AppConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--tasks", default="antonyms,capitals,dates,sentiment-hard")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=30)
    a = ap.parse_args()
    import tempfile
    engine = Engine(AppConfig(model=None, runs_dir=Path(tempfile.mkdtemp()), offline=True, max_models=1))
    print(f"load average {os.getloadavg()[0]:.1f}")
    for task in a.tasks.split(","):
        t0 = time.time()
        req = SweepSeriesRequest.from_mapping(dict(source="models", models=a.models, task=task, k=a.k,
                                                   seeds=a.seeds, selection="random", limit=a.limit))
        for r in engine.emergence.sweep(req):
            m = {k: None if v is None else round(v, 3) for k, v in r.metrics.items()}
            print(f"{task:15s} {r.model:14s} {r.n_params / 1e6:6.0f}M  {m}  chance {r.chance:.2f}"
                  + (f"  error: {r.error}" if r.error else ""))
        print(f"  ({time.time() - t0:.0f} s)")
    from core.attention.requests import HeadRolesRequest
    from core.models.requests import LoadRequest
    for name in a.models.split(","):
        key = engine.models.load(LoadRequest(model=name)).key
        s = engine.attention.head_scores(HeadRolesRequest(model=key))
        print(name, {role: [(f"L{l}.H{h}", round(v, 2)) for l, h, v in s.top(role, 3)]
                     for role in ("induction", "previous_token", "sink")})
        engine.models.unload(key)


if __name__ == "__main__":
    main()
