"""The classic in-context-learning presets on a real model, for the README's "What reproduces" table.

    python bench/real_presets.py [--model smollm2-135m] [--presets brown2020,min2022] [--limit 24]

Runs each preset as the Few-shot tab does (its configurations, axis values and seeds, on the task the
preset picks for a pretrained model) and prints the mean metric per configuration and axis value, with
the spread over seeds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.fewshot.presets import PRESETS, task_for  # noqa: E402
from core.fewshot.run import sweep  # noqa: E402
from core.models.loading import load_model  # noqa: E402
from core.models.types import ModelSpec  # noqa: E402
from core.tasks import load_builtin  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--limit", type=int, default=24)
    a = ap.parse_args()
    handle = load_model(ModelSpec(a.model))
    print(f"{a.model}; load average {os.getloadavg()[0]:.1f}; first {a.limit} test rows")
    for name in a.presets.split(","):
        p = PRESETS[name]
        task = load_builtin(task_for(p, False))
        t0 = time.perf_counter()
        print(f"\n{name} ({task_for(p, False)}; axis {p.axis}; seeds {list(p.seeds)})")
        for config in p.configs:
            runs = sweep(handle, task, replace(config, limit=a.limit), list(p.values), list(p.seeds), p.axis)
            for metric in p.metrics:
                cells = []
                for v in p.values:
                    xs = [getattr(r.metrics, metric) for r in runs if getattr(r.config, p.axis) == v]
                    xs = [x for x in xs if x is not None]
                    cells.append(f"{v}: {np.mean(xs):.2f}±{np.std(xs):.2f}" if xs else f"{v}: -")
                print(f"  {config.name or config.label():24s} {metric:20s} " + "  ".join(cells), flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
