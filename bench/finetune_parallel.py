"""Fine-tuning on one process against two (DDP and FSDP, torchrun on gloo), the same global batch: wall time,
training throughput and the largest difference of the loss curves, in one run.

    python bench/finetune_parallel.py [--model default] [--steps 60] [--batch-size 16]

On a machine with N cores, one process gets N threads and each of two gets N/2, so the comparison is of the same
compute split two ways; on GPUs (``--device cuda``) each rank takes its own GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(out: Path, a, processes: int, how: str) -> dict:
    threads = max(1, (os.cpu_count() or 2) // processes)
    cmd = [sys.executable, "-m", "core", "finetune", "--model", a.model, "--task", a.task, "--objective",
           a.objective, "--method", a.method, "--lora-dropout", "0", "--batch-size", str(a.batch_size),
           "--max-steps", str(a.steps), "--eval-every", str(a.steps), "--threads", str(threads), "--device",
           a.device, "--processes", str(processes), "--parallel", how, "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    events = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": wall, "tokens_per_second": metrics["tokens_per_second"], "train_s": metrics["train_seconds"],
            "loss": [e["loss"] for e in events if e["event"] == "train"], "accuracy": metrics["eval_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="wordgroups")
    ap.add_argument("--objective", default="causal")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = run(Path(tmp) / "one", a, 1, "ddp")
        rows = [("1 process", ref)]
        for how in ("ddp", "fsdp"):
            rows.append((f"2 processes, {how}", run(Path(tmp) / how, a, 2, how)))
    print(f"{a.model}, {a.method} {a.objective} on {a.task}: {a.steps} steps of {a.batch_size} examples, {a.device}, "
          f"{os.cpu_count()} cores")
    print(f"{'':20s} {'wall s':>7s} {'train s':>8s} {'tokens/s':>9s} {'ratio':>6s} {'max |loss diff|':>16s} {'accuracy':>9s}")
    for name, r in rows:
        diff = max(abs(x - y) for x, y in zip(r["loss"], ref["loss"]))
        print(f"{name:20s} {r['wall_s']:7.1f} {r['train_s']:8.1f} {r['tokens_per_second']:9.0f} "
              f"{r['tokens_per_second'] / ref['tokens_per_second']:6.2f} {diff:16.2e} {r['accuracy']:9.3f}")


if __name__ == "__main__":
    main()
