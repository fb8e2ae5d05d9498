"""The Interventions tab through its API: ablate, scan, patch, lens, bad input."""
import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure

FORM = ["el-2l-128", "recall", 4, "nearest", 12]
BUILT_IN = [None, None, "", "", "", "\\n\\n"]  # no uploaded task: the built-in one above


@pytest.fixture(scope="module", autouse=True)
def loaded(client):
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")


def test_ablate_a_head_and_see_the_accuracy_with_and_without_it(client):
    msg = client.predict(*FORM, "0.3", "zero", *BUILT_IN, api_name="/ablate_heads")
    assert "0.3" in msg and "accuracy" in msg and "→" in msg
    with pytest.raises(AppError, match="no head 5.0"):
        client.predict(*FORM, "5.0", "zero", *BUILT_IN, api_name="/ablate_heads")
    with pytest.raises(AppError, match="Name the heads"):
        client.predict(*FORM, "", "zero", *BUILT_IN, api_name="/ablate_heads")


def test_scan_beside_the_head_roles_with_exports(client):
    summary, plot, table, csv_path, json_path = client.predict(*FORM, "", "zero", *BUILT_IN, api_name="/ablation_scan")
    assert "hurts most" in summary
    fig = figure(plot)
    assert [t["z"].shape for t in fig["data"]][:2] == [(2, 4), (2, 4)]  # Δ accuracy, Δ log p(gold): layer x head
    d_acc = fig["data"][0]["z"]
    worst = summary.split("**L")[1].split("**")[0]  # the head the summary names is the grid's lowest
    assert d_acc[int(worst[0]), int(worst.split(".H")[1])] == d_acc.min()
    assert axis_titles(fig)["yaxis"] == "layer" and axis_titles(fig)["xaxis"] == "head"
    assert table["headers"][0] == "layer" and len(table["data"]) == 2
    d = json.load(open(json_path))
    assert d["layers"] == 2 and d["heads"] == 4
    assert open(csv_path).read().startswith("layer,head,accuracy")


def test_a_task_of_your_own_files_ablates_and_scans_like_the_built_in_one(client, tmp_path):
    """The tab takes the Few-shot tab's data (uploaded CSVs with a template), not only built-in tasks: the recall
    task's own rows, uploaded under other column names, score exactly as the built-in task."""
    import csv
    from gradio_client import handle_file
    from core.tasks import load_builtin
    task = load_builtin("recall")
    for split in ("train", "test"):
        rows = list(csv.reader(open(f"assets/tasks/recall/{split}.csv")))
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["cue", "answer"], *rows[1:]])
    mine = [handle_file(str(tmp_path / "train.csv")), handle_file(str(tmp_path / "test.csv")), "{cue} =", "answer",
            ",".join(task.choices), " ; "]
    built_in = client.predict(*FORM, "0.3", "zero", *BUILT_IN, api_name="/ablate_heads")
    uploaded = client.predict(*FORM, "0.3", "zero", *mine, api_name="/ablate_heads")
    import re
    numbers = lambda md: re.findall(r"-?\d+\.\d+", md)  # noqa: E731
    assert len(numbers(built_in)) == 6 and numbers(uploaded) == numbers(built_in)  # the same accuracies and log p
    assert "**recall**" in built_in and "**recall**" not in uploaded  # ... of another task: the uploaded one
    summary, plot, *_ = client.predict(*FORM, "", "zero", *mine, api_name="/ablation_scan")
    assert "hurts most" in summary and figure(plot)["data"][0]["z"].shape == (2, 4)
    with pytest.raises(AppError, match="template"):
        client.predict(*FORM, "0.3", "zero", *mine[:2], "", *mine[3:], api_name="/ablate_heads")


def test_patch_and_lens(client):
    from ui.tabs.interventions import CLEAN, CORRUPT
    plot, path = client.predict("el-2l-128", CLEAN, CORRUPT, " w42", api_name="/patch")
    res = json.load(open(path))
    assert abs(res["residual"][-1][-1] - 1.0) < 1e-4
    # beside it, attribution patching (one backward) and how far to trust it
    assert np.array(res["residual_atp"]).shape == np.array(res["residual"]).shape
    assert res["rank_correlation"]["heads"] > 0.8 and res["rank_correlation"]["residual"] > 0.8
    fig = figure(plot)
    assert len(fig["data"]) == 4 and "rank correlation" in json.dumps(fig["layout"]["annotations"])
    with pytest.raises(AppError, match="same length in tokens"):
        client.predict("el-2l-128", CLEAN, "w3 = w17 ;", " w42", api_name="/patch")
    plot, table, path = client.predict("el-2l-128", CLEAN, " w42", api_name="/logit_lens")
    assert len(table["data"]) == 2 and len(json.load(open(path))["target_prob"]) == 2
