"""Few-shot scoring: ours against EleutherAI's lm-evaluation-harness, same model and prompts.

    python bench/fewshot_speed.py [--ks 8 32] [--queries 200] [--device cpu]

A GPT-2-shaped model (124M parameters, random weights: no download) with a
byte-level BPE tokenizer trained here, a binary sentiment task written as CSV
(``--queries`` test rows x 2 choices) and lm-eval's layout with its ``first_n``
sampler. Both sides score the same (context, continuation) pairs; the script
checks that the per-choice log-likelihoods agree, then prints the wall-clock
times and the ratio lm-eval / ours for each k.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {8: 20, 32: 30}  # issue 20: lm-eval's time over ours, in one process each
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def write_task(folder: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    from core.build.builtin_tasks import BAD, BAD_TAIL, GOOD, GOOD_TAIL, SUBJECTS
    rng = random.Random(0)
    rows = [{"text": f"{s} was {a} {t}", "label": lab} for s in SUBJECTS
            for lab, adjs, tails in (("positive", GOOD, GOOD_TAIL), ("negative", BAD, BAD_TAIL))
            for a in adjs for t in tails]
    rng.shuffle(rows)
    train, test = folder / "train.csv", folder / "test.csv"
    pd.DataFrame(rows[:n_train]).to_csv(train, index=False)
    pd.DataFrame(rows[n_train: n_train + n_test]).to_csv(test, index=False)
    return train, test


def build_model(folder: Path) -> Path:
    import torch
    from tiny import bpe_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    tok = bpe_tokenizer(bos=False, vocab_size=2000)
    cfg = GPT2Config(vocab_size=50257, n_positions=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)  # 124M parameters, GPT-2 small's shape
    tok.save_pretrained(folder)
    return folder


def lmeval_task(folder: Path, train: Path, test: Path) -> Path:
    """The task as lm-eval's YAML (``bench_sentiment``): the same CSV, template and choices as ours."""
    folder.mkdir(exist_ok=True)
    (folder / "bench.yaml").write_text(f"""
task: bench_sentiment
dataset_path: csv
dataset_kwargs: {{data_files: {{train: {train}, test: {test}}}}}
fewshot_split: train
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["positive", "negative"]
doc_to_target: "{{{{['positive', 'negative'].index(label)}}}}"
fewshot_config: {{sampler: first_n}}
metric_list: [{{metric: acc}}]
""")
    return folder


def run_lmeval(model_dir, train, test, k, tmp, device, batch_size, dtype: str = "float32") -> tuple[float, np.ndarray, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    tasks = lmeval_task(tmp / f"tasks_k{k}", train, test)
    lm = HFLM(pretrained=str(model_dir), device=device, dtype=dtype, batch_size=batch_size)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=["bench_sentiment"], num_fewshot=k,
                                  task_manager=TaskManager(include_path=str(tasks)), log_samples=True)
    elapsed = time.perf_counter() - t0
    samples = sorted(out["samples"]["bench_sentiment"], key=lambda s: s["doc_id"])
    return elapsed, np.array([[r[0] for r in s["filtered_resps"]] for s in samples]), \
        float(np.mean([s["acc"] for s in samples]))


def run_ours(model_dir, train, test, k, device) -> tuple[float, np.ndarray, float, int]:
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.tasks import Template, read_table, task_from_tables
    from core.models.types import ModelSpec
    handle = load_model(ModelSpec(str(model_dir), device=device, dtype="float32"))
    task = task_from_tables(read_table(train), read_table(test), Template("Review: {text}\nSentiment:"),
                            "label", ["positive", "negative"])
    t0 = time.perf_counter()
    run = run_fewshot(handle, task, FewShotConfig(k=k, selection="first"))
    elapsed = time.perf_counter() - t0
    return elapsed, np.array([e.choice_logprobs for e in run.examples]), run.metrics.accuracy, run.max_prompt_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lmeval-batch-size", default="16")
    args = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model_dir = build_model(tmp / "gpt2-124m")
        train, test = write_task(tmp, max(args.ks) + 8, args.queries)
        for k in args.ks:
            ours_s, ours_ll, ours_acc, tokens = run_ours(model_dir, train, test, k, args.device)
            ref_s, ref_ll, ref_acc = run_lmeval(model_dir, train, test, k, tmp, args.device, args.lmeval_batch_size)
            diff = float(np.abs(ours_ll - ref_ll).max())
            print(f"k={k:3d}  prompt ≈{tokens} tokens  {args.queries} queries x 2 choices  "
                  f"lm-eval {ref_s:7.2f} s  ours {ours_s:6.2f} s  ratio {ref_s / ours_s:5.1f}x  "
                  f"max |Δ log-lik| {diff:.1e}  acc {ours_acc:.3f} vs {ref_acc:.3f}"
                  + (f"  target ≥{TARGETS[k]}x: {'met' if ref_s / ours_s >= TARGETS[k] else 'NOT met'}"
                     if k in TARGETS else ""), flush=True)


if __name__ == "__main__":
    main()
