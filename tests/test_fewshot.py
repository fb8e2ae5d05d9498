"""Few-shot engine: tasks, demonstrations, perturbations, metrics, and the recall curves."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.fewshot.demos import build_prompt, demonstrations
from core.errors import UserError
from core.fewshot.run import edit_distance, run_fewshot, summarise, sweep
from core.fewshot.types import FewShotConfig
from core.models.loading import load_model
from core.tasks import Template, builtin_names, load_builtin, read_table, task_from_tables
from core.models.types import ModelSpec

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default_model():
    return load_model(ModelSpec("default", device="cpu", dtype="float32"))


def test_builtin_tasks_load_and_splits_are_disjoint():
    assert set(builtin_names()) >= {"sentiment", "topic", "antonyms", "addition", "recall"}
    for name in ["sentiment", "topic", "antonyms", "addition"]:
        t = load_builtin(name)
        assert len(t.train.merge(t.test)) == 0, name


def test_prompt_layout_is_lm_eval_s():
    task = load_builtin("sentiment").with_template(Template("Review: {text}\nSentiment:", "Judge."))
    demos = demonstrations(task, FewShotConfig(k=2))
    prompt = build_prompt(task.template, demos, "Review: x\nSentiment:")
    rows = task.rows("train")
    assert prompt == (f"Judge.\n\nReview: {rows[0]['text']}\nSentiment: {rows[0]['label']}\n\n"
                      f"Review: {rows[1]['text']}\nSentiment: {rows[1]['label']}\n\nReview: x\nSentiment:")


def test_selection_order_and_perturbation():
    task = load_builtin("sentiment")
    bal = demonstrations(task, FewShotConfig(k=6, selection="balanced", seed=3))
    assert sorted(d.gold for d in bal).count("positive") == 3
    a = demonstrations(task, FewShotConfig(k=6, selection="random", seed=1))
    assert [d.index for d in a] == [d.index for d in demonstrations(task, FewShotConfig(k=6, selection="random", seed=1))]
    assert [d.index for d in a] != [d.index for d in demonstrations(task, FewShotConfig(k=6, selection="random", seed=2))]
    grouped = demonstrations(task, FewShotConfig(k=8, order="grouped"))
    labels = [d.gold for d in grouped]
    assert labels == sorted(labels)
    flipped = demonstrations(task, FewShotConfig(k=8, perturb="flip", flip_fraction=0.5))
    assert sum(d.shown != d.gold for d in flipped) == 4
    allflip = demonstrations(task, FewShotConfig(k=8, perturb="flip", flip_fraction=1.0))
    assert all(d.shown != d.gold for d in allflip)
    unrelated = demonstrations(task, FewShotConfig(k=4, perturb="unrelated"))
    assert {d.shown for d in unrelated} <= {"foo", "bar"}
    manual = demonstrations(task, FewShotConfig(k=2, selection="manual", manual=(5, 1)))
    assert [d.index for d in manual] == [5, 1]


def test_nearest_neighbours_are_similar():
    task = load_builtin("topic")
    handle_free = demonstrations(task, FewShotConfig(k=3, selection="nearest"), task.rows("test")[0], 0,
                                 similarity=np.eye(len(task.test), len(task.train)))
    assert handle_free[-1].index == 0  # the most similar sits right before the query


def test_bad_input_messages(tmp_path):
    task = load_builtin("sentiment")
    with pytest.raises(UserError, match="larger than the pool of 40"):
        demonstrations(task, FewShotConfig(k=41))
    with pytest.raises(UserError, match="no column 'body'"):
        task.with_template(Template("Review: {body}"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_table(tmp_path / "latin.csv")
    df = pd.DataFrame({"text": ["a", "b"], "label": ["positive", "meh"]})
    with pytest.raises(UserError, match="'meh' is not one of the choices"):
        task_from_tables(df, df, Template("{text}"), "label", ["positive", "negative"])
    (tmp_path / "rows.jsonl").write_text('{"text": "a", "label": "0"}\n{"text": "b", "label": "1"}\n')
    t = task_from_tables(read_table(tmp_path / "rows.jsonl"), read_table(tmp_path / "rows.jsonl"),
                         Template("{text}"), "label", ["no", "yes"])
    assert t.gold(t.rows("test")[1]) == "yes"  # an index into the choices


def test_prompt_over_the_context_is_a_clear_error(default_model):
    task = load_builtin("recall").with_template(Template("{key} = {value} = {key} = {value} =", fewshot_delimiter=" ; "))
    with pytest.raises(UserError, match="context holds 64"):
        run_fewshot(default_model, task, FewShotConfig(k=12, limit=2))


def test_recall_rises_with_k_and_label_perturbations_differ(default_model):
    task = load_builtin("recall")
    curves = {}
    for name, cfg in {"gold": FewShotConfig(selection="random"),
                      "random": FewShotConfig(selection="random", perturb="random"),
                      "flip": FewShotConfig(selection="random", perturb="flip", flip_fraction=0.5)}.items():
        curves[name] = [p["mean"] for p in summarise(sweep(default_model, task, cfg, [0, 4, 12], [0, 1]))]
    gold, rnd, flip = curves["gold"], curves["random"], curves["flip"]
    assert gold[0] < 0.2 and gold[0] < gold[1] < gold[2] and gold[2] > 0.8
    assert rnd[2] < 0.3                      # random labels: the model copies them, near chance
    assert rnd[2] + 0.3 < flip[2] < gold[2] - 0.2  # half flipped: in between


def test_calibration_and_metrics(default_model):
    run = run_fewshot(default_model, load_builtin("recall"), FewShotConfig(k=6, calibrate=True))
    m = run.metrics
    assert m.accuracy_calibrated is not None and 0 <= m.brier <= 2
    assert sum(map(sum, m.confusion)) == m.n == 48
    assert m.demo_recent_label == run.demos[-1].shown
    assert abs(sum(m.prediction_share.values()) - 1) < 1e-9
    for e in run.examples:
        assert abs(sum(e.probs) - 1) < 1e-6 and e.gold_logprob == e.choice_logprobs[run.choices.index(e.gold)]


def test_generative_task_metrics(default_model):
    task = load_builtin("recall")
    gen = task_from_tables(task.train, task.test, task.template, "value", None, name="recall-gen")
    run = run_fewshot(default_model, gen, FewShotConfig(k=12, limit=12))
    assert run.choices is None
    assert run.metrics.accuracy > 0.7  # greedy exact match when every key is in the prompt
    for e in run.examples:
        assert (e.edit_distance == 0) == e.correct and e.gold_logprob < 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 5]) == 2


def test_cli_writes_the_documented_json(tmp_path):
    task = load_builtin("recall")
    task.train.to_csv(tmp_path / "train.csv", index=False)
    task.test.to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-m", "core", "fewshot", "--model", "default", "--train", str(tmp_path / "train.csv"),
                    "--test", str(tmp_path / "test.csv"), "--template", "{key} =", "--choices", ",".join(task.choices),
                    "--label-column", "value", "--k", "12", "--selection", "first", "--seed", "0",
                    "--fewshot-delimiter", " ; ", "--limit", "10", "--out", str(out)], check=True, cwd=ROOT)
    data = json.loads(out.read_text())
    assert set(data) >= {"accuracy", "examples"} and len(data["examples"]) == 10
    assert [e["index"] for e in data["examples"]] == list(range(10))
    e = data["examples"][0]
    assert set(e) >= {"index", "gold", "prediction", "choice_logprobs", "correct"}
    assert len(e["choice_logprobs"]) == 12 and data["accuracy"] == np.mean([x["correct"] for x in data["examples"]])
    # recorded in the History like the tab's run (the runs folder: $EMERGENCE_LAB_RUNS, a temporary one here)
    from core.history.store import History
    from core.models.types import default_runs_dir
    rec = History(default_runs_dir()).get(data["history_id"])
    assert rec.lab == "fewshot" and rec.task == "train" and rec.summary
    bad = subprocess.run([sys.executable, "-m", "core", "fewshot", "--task", "sentiment", "--template", "{nope}",
                          "--k", "2"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr


def test_a_bad_label_names_the_row_of_the_users_file_not_of_the_shuffled_split(tmp_path):
    from core.errors import UserError
    from core.tasks import Template, read_table, split_table, task_from_tables
    rows = [f"w{i} w{i + 1},{'pos' if i % 2 else 'neg'}" for i in range(20)]
    rows[13] = "w13 w14,maybe"  # the 14th data row of the file
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    train, test = split_table(read_table(path))
    with pytest.raises(UserError, match=r"Row 14 of the uploaded file .*'maybe'"):
        task_from_tables(train, test, Template("{text}"), "label", ["pos", "neg"])
