"""The ablation scan's cost against its reference: one plain scoring run of the same task, times the heads.

    python bench/ablation_scan.py [--model default] [--task recall] [--k 4] [--repeats 3]

A scan ablates every head once and scores the task each time with the shared-prefix scorer, so its
ideal cost is (heads x one scoring run) plus one base run. The script measures one plain run (median of
``--repeats``), then the scan, in the same process, and prints the ratio scan / ((heads + 1) x run).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="recall")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.interventions.ablation import scan
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import load_builtin
    handle = load_model(ModelSpec(args.model))
    task, config = load_builtin(args.task), FewShotConfig(k=args.k, selection="nearest")
    run_fewshot(handle, task, config)  # warm-up
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run_fewshot(handle, task, config)
        runs.append(time.perf_counter() - t0)
    one = statistics.median(runs)
    t0 = time.perf_counter()
    res = scan(handle, task, config)
    total = time.perf_counter() - t0
    n_heads = handle.info.n_layers * handle.info.n_heads
    out = {"model": handle.info.key, "task": args.task, "k": args.k, "heads": n_heads,
           "one_run_s": round(one, 4), "scan_s": round(total, 3),
           "ratio_scan_to_heads_plus_one_runs": round(total / ((n_heads + 1) * one), 3),
           "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
           "base_accuracy": res.base_accuracy}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
