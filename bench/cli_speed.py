"""Few-shot scoring as a person runs it from the shell: our CLI against lm-evaluation-harness's CLI.

    python bench/cli_speed.py [--ks 32] [--queries 200] [--threads 2]

The model, CSV and prompts of ``bench/fewshot_speed.py`` (a GPT-2-shaped 124M model with random
weights, a binary sentiment task, lm-eval's layout and ``first_n`` sampler). Each side is one fresh
process timed from launch to exit, start-up and model load included:

- ours:    ``python -m core fewshot --model DIR --train … --test … --k K --selection first --out …``
- lm-eval: ``lm_eval --model hf --model_args pretrained=DIR,dtype=float32 --tasks … --include_path …
  --num_fewshot K --batch_size 16 --log_samples --output_path …``

Both write every choice's log-likelihood; the script checks they agree (≤1e-4) and prints the
wall-clock times, the ratio lm-eval / ours and the target (≥10× at k=32). The machine's load
average is printed before each run.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
TARGET = 10.0


def _timed(cmd: list[str], env: dict) -> float:
    print(f"  load {os.getloadavg()[0]:.2f}: {' '.join(cmd[:4])} …", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def ours(model_dir: Path, train: Path, test: Path, k: int, out: Path, env: dict) -> tuple[float, np.ndarray]:
    cmd = [sys.executable, "-m", "core", "fewshot", "--model", str(model_dir), "--dtype", "float32",
           "--train", str(train), "--test", str(test), "--template", "Review: {text}\nSentiment:",
           "--choices", "positive,negative", "--label-column", "label", "--k", str(k),
           "--selection", "first", "--out", str(out)]
    elapsed = _timed(cmd, env)
    rows = json.loads(out.read_text())["examples"]
    return elapsed, np.array([r["choice_logprobs"] for r in sorted(rows, key=lambda r: r["index"])])


def lmeval(model_dir: Path, train: Path, test: Path, k: int, tmp: Path, env: dict) -> tuple[float, np.ndarray]:
    from fewshot_speed import lmeval_task
    tasks = lmeval_task(tmp / f"tasks_k{k}", train, test)
    out = tmp / f"lmeval_k{k}"
    cmd = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf",
           "--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", "bench_sentiment",
           "--include_path", str(tasks), "--num_fewshot", str(k), "--batch_size", "16", "--device", "cpu",
           "--log_samples", "--output_path", str(out)]
    elapsed = _timed(cmd, env)
    samples = next(out.rglob("samples_bench_sentiment_*.jsonl"))
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])
    return elapsed, np.array([[float(r[0]) for r in s["filtered_resps"]] for s in rows])  # logged as text


def main() -> None:
    from fewshot_speed import build_model, write_task
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", type=int, nargs="+", default=[32])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model_dir = build_model(tmp / "gpt2-124m")
        train, test = write_task(tmp, max(args.ks) + 8, args.queries)
        for k in args.ks:
            ours_s, ours_ll = ours(model_dir, train, test, k, tmp / f"ours_k{k}.json", env)
            ref_s, ref_ll = lmeval(model_dir, train, test, k, tmp, env)
            diff = float(np.abs(ours_ll - ref_ll).max())
            ratio = ref_s / ours_s
            verdict = "met" if k != 32 or ratio >= TARGET else "NOT met"
            print(f"k={k:3d}  {args.queries} queries x 2 choices, one process each, start-up included: "
                  f"lm-eval CLI {ref_s:7.1f} s  ours {ours_s:6.1f} s  ratio {ratio:5.1f}x  "
                  f"max |Δ log-lik| {diff:.1e}" + (f"  target ≥{TARGET:.0f}x at k=32: {verdict}" if k == 32 else ""),
                  flush=True)
            if diff > 1e-4:
                raise SystemExit("log-likelihoods disagree")


if __name__ == "__main__":
    main()
