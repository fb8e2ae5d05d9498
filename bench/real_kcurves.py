"""Accuracy against k on a real model, for the README's "Tasks worth prompting" table.

    python bench/real_kcurves.py [--model smollm2-135m] [--tasks sentiment,dates] [--ks 0,4,8]
                                 [--seeds 2] [--limit 40]

k=0 runs once; k>0 draws random demonstrations with each seed. Prints one line per (task, k):
the accuracies per seed and the seconds taken, with the machine's load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.fewshot.run import run_fewshot  # noqa: E402
from core.fewshot.types import FewShotConfig  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.models.types import ModelSpec  # noqa: E402
from core.tasks import load_builtin  # noqa: E402

TASKS = "sentiment,sentiment-hard,sentiment-sul,topic-8,antonyms,capitals,dates"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--ks", default="0,4,8")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=40)
    a = ap.parse_args()
    handle = load_model(ModelSpec(a.model))
    print(f"{a.model}; load average {os.getloadavg()[0]:.1f}")
    for name in a.tasks.split(","):
        task = load_builtin(name)
        limit = a.limit if task.choices else min(a.limit, 30)
        for k in (int(x) for x in a.ks.split(",")):
            t0 = time.perf_counter()
            accs = [run_fewshot(handle, task, FewShotConfig(k=k, selection="random" if k else "first", seed=s,
                                                            limit=limit)).metrics.accuracy
                    for s in range(a.seeds if k else 1)]
            print(f"{name:16s} k={k:<2d} accuracy {' / '.join(f'{x:.3f}' for x in accs)}  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
