"""Exactness against EleutherAI's lm-evaluation-harness on the same local model, CSV task and layout."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.models.loading import load_model
from core.tasks import Template, load_builtin, task_from_tables
from core.models.types import ModelSpec

INSTRUCTION = "Classify the review."


def _lmeval_samples(model_dir, train_csv, test_csv, tmp_path, k: int, limit: int) -> list[dict]:
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    tasks_dir = tmp_path / "lmeval_tasks"
    tasks_dir.mkdir()
    (tasks_dir / "el_sentiment.yaml").write_text(f"""
task: el_sentiment
dataset_path: csv
dataset_kwargs:
  data_files:
    train: {train_csv}
    test: {test_csv}
training_split: train
fewshot_split: train
test_split: test
output_type: multiple_choice
description: "{INSTRUCTION}\\n\\n"
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["positive", "negative"]
doc_to_target: "{{{{['positive', 'negative'].index(label)}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
fewshot_config:
  sampler: first_n
metric_list:
  - metric: acc
""")
    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=16)
    out = lm_eval.simple_evaluate(model=lm, tasks=["el_sentiment"], num_fewshot=k, limit=limit,
                                  task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True)
    return sorted(out["samples"]["el_sentiment"], key=lambda s: s["doc_id"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_bpe", "llama_bpe", "smollm2-135m"])
def test_loglikelihoods_and_accuracy_equal_lm_eval(request, tmp_path, name):
    """On tiny fixtures and on the real SmolLM2 (a real tokenizer with a BOS token and a chat template)."""
    if name == "smollm2-135m":
        from core.models.loading import resolve
        request.getfixturevalue("smollm2")  # skips when the package is absent; converts once
        model_dir, k, limit, task_name = resolve(ModelSpec(name)).path, 4, 16, "sentiment-hard"
    else:
        model_dir, k, limit, task_name = request.getfixturevalue("bpe_models")[name], 8, 24, "sentiment"
    builtin = load_builtin(task_name)
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    builtin.train.to_csv(train_csv, index=False)
    builtin.test.to_csv(test_csv, index=False)
    samples = _lmeval_samples(model_dir, train_csv, test_csv, tmp_path, k=k, limit=limit)

    task = task_from_tables(pd.read_csv(train_csv, dtype=str), pd.read_csv(test_csv, dtype=str),
                            Template("Review: {text}\nSentiment:", instruction=INSTRUCTION),
                            "label", ["positive", "negative"])
    handle = load_model(ModelSpec(str(model_dir), device="cpu", dtype="float32"))
    run = run_fewshot(handle, task, FewShotConfig(k=k, selection="first", limit=limit))

    assert len(samples) == len(run.examples) == limit
    theirs = np.array([[r[0] for r in s["filtered_resps"]] for s in samples], dtype=float)  # (docs, choices)
    ours = np.array([e.choice_logprobs for e in run.examples])
    assert np.abs(theirs - ours).max() < 1e-4, json.dumps(samples[0]["arguments"])[:500]
    their_acc = float(np.mean([s["acc"] for s in samples]))
    assert run.metrics.accuracy == their_acc
    assert run.shared_prefix_tokens > 60  # the demonstrations were computed once
