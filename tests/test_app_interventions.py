"""The Interventions tab through its API: ablate, scan, patch, lens, bad input."""
import json

import pytest
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure

FORM = ["el-2l-128", "recall", 4, "nearest", 12]


@pytest.fixture(scope="module", autouse=True)
def loaded(client):
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")


def test_ablate_a_head_and_see_the_accuracy_with_and_without_it(client):
    msg = client.predict(*FORM, "0.3", "zero", api_name="/ablate_heads")
    assert "0.3" in msg and "accuracy" in msg and "→" in msg
    with pytest.raises(AppError, match="no head 5.0"):
        client.predict(*FORM, "5.0", "zero", api_name="/ablate_heads")
    with pytest.raises(AppError, match="Name the heads"):
        client.predict(*FORM, "", "zero", api_name="/ablate_heads")


def test_scan_beside_the_head_roles_with_exports(client):
    summary, plot, table, csv_path, json_path = client.predict(*FORM, "", "zero", api_name="/ablation_scan")
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


def test_patch_and_lens(client):
    from ui.tabs.interventions import CLEAN, CORRUPT
    plot, path = client.predict("el-2l-128", CLEAN, CORRUPT, " w42", api_name="/patch")
    res = json.load(open(path))
    assert abs(res["residual"][-1][-1] - 1.0) < 1e-4
    with pytest.raises(AppError, match="same length in tokens"):
        client.predict("el-2l-128", CLEAN, "w3 = w17 ;", " w42", api_name="/patch")
    plot, table, path = client.predict("el-2l-128", CLEAN, " w42", api_name="/logit_lens")
    assert len(table["data"]) == 2 and len(json.load(open(path))["target_prob"]) == 2
