"""Named-entity recognition with the MiniLM encoder on the built-in task, against the issue's 5-minute budget.

    python bench/ner_minilm.py [--method full] [--epochs 3] [--lr 1e-4] [--threads 2]

Trains through the CLI in a fresh process (as the app's queue does), then scores the saved model on the whole
test split (300 sentences whose names never occur in training; a fifth with unseen sentence frames). Prints
one JSON line: entity precision/recall/F1 overall and per type, the wall time and its ratio to 300 s, and the
machine's load average.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--method", default="full")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="ner-bench-")) / "run"
    load = os.getloadavg()[0]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "core", "finetune", "--model", a.model, "--task", "ner", "--objective",
                    "token-classification", "--method", a.method, "--epochs", a.epochs, "--lr", a.lr,
                    "--batch-size", a.batch_size, "--threads", a.threads, "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    wall = time.time() - t0
    from core.finetune.tagging import ReportRequest, report
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    metrics = json.loads((out / "metrics.json").read_text())
    handle = load_model(ModelSpec(metrics["model_path"]))
    rep = report(handle, ReportRequest(model=handle.info.key, task="ner"))
    s = rep.scores
    print(json.dumps({
        "model": a.model, "method": a.method, "epochs": float(a.epochs), "lr": float(a.lr),
        "entity_f1": round(s.overall.f1, 4), "precision": round(s.overall.precision, 4),
        "recall": round(s.overall.recall, 4), "word_accuracy": round(s.token_accuracy, 4),
        "per_type_f1": {k: round(v.f1, 4) for k, v in s.per_type.items()}, "test_sentences": len(rep.sentences),
        "wall_s": round(wall, 1), "train_s": metrics["train_seconds"], "budget_s": BUDGET_S,
        "ratio_to_budget": round(wall / BUDGET_S, 3), "trainable_params": metrics["trainable_params"],
        "load_average_before": round(load, 2)}))


if __name__ == "__main__":
    main()
