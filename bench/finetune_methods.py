"""The fine-tuning methods side by side on one task and step budget, full fine-tuning as the reference.

    python bench/finetune_methods.py --model minilm-l6 --task sentiment-hard --steps 60 --batch-size 16 \
        --methods full,lora,ia3,prefix,prompt [--method-lrs 'full=5e-5,lora=5e-4'] [--runs-dir DIR]

Runs the study the Tuning studies tab runs (each method a queued run in its own process) and prints one line
per method: held-out score, trainable parameters and share, peak memory, throughput and training time, each
also as a ratio to full fine-tuning's in the same run; then the machine's load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine import Engine  # noqa: E402
from core.finetune.requests import MethodsRequest  # noqa: E402
from core.models.types import AppConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--task", default="sentiment-hard")
    ap.add_argument("--objective", default="classification")
    ap.add_argument("--methods", default="full,lora,ia3,prefix,prompt")
    ap.add_argument("--method-lrs", default="")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--runs-dir", default=None)
    a = ap.parse_args()
    runs = Path(a.runs_dir or tempfile.mkdtemp(prefix="methods-bench-"))
    engine = Engine(AppConfig(model=None, runs_dir=runs, offline=True))
    req = MethodsRequest.from_mapping(dict(model=a.model, task=a.task, objective=a.objective, methods=a.methods,
                                           method_lrs=a.method_lrs, max_steps=a.steps, batch_size=a.batch_size,
                                           lora_r=a.lora_r, lora_alpha=2 * a.lora_r))
    load = os.getloadavg()[0]
    st = engine.studies.wait(engine.studies.methods_start(req), poll=2.0)
    ref = next((r for r in st.runs if r.method == "full" and r.state == "finished"), None)
    print(f"{a.model} on {a.task} ({a.objective}), {a.steps} steps of {a.batch_size}; load average {load:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after")
    print("| method | held-out " + st.metric + " | trainable | share | peak RSS | tokens/s | training s |")
    print("|---|---|---|---|---|---|---|")
    for r in st.runs:
        if r.state != "finished":
            print(f"| {r.method} | {r.state}: {r.message[:120]} | | | | | |")
            continue

        def rel(x, y):
            return f" ({x / y:.2f}×)" if ref is not None and x and y and r is not ref else ""
        print(f"| {r.method} | {r.score:.3f} | {r.trainable_params:,} | {100 * r.trainable_share:.3g}% | "
              f"{r.peak_memory_bytes / 2**20:.0f} MB{rel(r.peak_memory_bytes, ref and ref.peak_memory_bytes)} | "
              f"{r.tokens_per_second:,.0f}{rel(r.tokens_per_second, ref and ref.tokens_per_second)} | "
              f"{r.train_seconds:.1f}{rel(r.train_seconds, ref and ref.train_seconds)} |")


if __name__ == "__main__":
    main()
