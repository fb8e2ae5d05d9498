"""The Fine-tune tab through its API: preview, train live, comparison, bad input."""
import numpy as np
import pytest
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure

# model, source, task, train file, eval file, text col, label col, template, objective, method, epochs, lr,
# batch, grad accum, max length, warm-up, weight decay, r, alpha, dropout, targets, seed, eval every,
# max steps, precision, gradient checkpointing, hub dataset id
WIDGETS = ["el-2l-128", "built-in", "wordgroups", None, None, "text", "label", "", "classification", "lora",
           12, "3e-3", 32, 1, 256, 0.06, 0.0, 32, 64, 0.05, "", 0, 0, 0, "auto", False, ""]


def widgets(**changes):
    names = ["model", "source", "task", "train", "eval", "text_col", "label_col", "template", "objective",
             "method", "epochs", "lr", "batch", "grad_accum", "max_length", "warmup", "weight_decay", "r",
             "alpha", "dropout", "targets", "seed", "eval_every", "max_steps", "precision", "grad_ckpt", "hub_id"]
    values = dict(zip(names, WIDGETS))
    values.update(changes)
    return [values[n] for n in names]


def test_preview_shows_what_the_model_reads(client):
    msg, table = client.predict(*widgets(), api_name="/finetune_preview")
    assert "800 training and 200 held-out examples" in msg and "chance 0.50" in msg
    assert table["headers"] == ["model input", "label"] and table["data"][0][0].endswith(" =")


@pytest.mark.slow
def test_train_then_compare_with_prompting(client, app_server):
    engine, _ = app_server
    run, status, _plot, history = client.predict(*widgets(), api_name="/finetune_start")
    assert "finished" in status and "held-out accuracy" in status
    row = next(r for r in history["data"] if r[0] == run)
    assert row[1] == "finished" and row[6] >= 0.85
    # the finished run is in the model list every tab loads from
    folder = row[history["headers"].index("model folder")]
    assert any(value == folder for _, value in engine.catalogue.model_choices())
    summary, examples = client.predict(run, 6, 100, api_name="/finetune_compare")
    acc = {r[0]: float(r[3]) for r in summary["data"]}
    assert acc["C: fine-tuned, k=0"] >= 0.85
    assert acc["A: base, k=0"] < 0.65 and acc["B: base, k=6"] < 0.65
    assert len(examples["data"]) == 100 and {"A ✓", "B ✓", "C ✓"} <= set(examples["headers"])
    models = {r[0]: r[summary["headers"].index("model")] for r in summary["data"]}
    assert models["C: fine-tuned, k=0"] == f"{run} (fine-tuned)" and models["A: base, k=0"] == "el-2l-128"


def test_bad_input_is_a_message_and_the_tab_keeps_working(client, tmp_path):
    with pytest.raises(AppError, match="not a number"):
        client.predict(*widgets(lr="fast"), api_name="/finetune_start")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nw1 w2,w0\nw3 w4,w1\n")
    from gradio_client import handle_file
    with pytest.raises(AppError, match="no column 'text'"):
        client.predict(*widgets(source="upload", train=handle_file(str(bad))), api_name="/finetune_preview")
    with pytest.raises(AppError, match="Pick the run to watch"):
        client.predict(None, api_name="/finetune_watch")
    with pytest.raises(AppError, match="needs the network and the app runs offline"):
        client.predict(*widgets(source="hub dataset", hub_id="stanfordnlp/sst2", text_col="sentence"),
                       api_name="/finetune_preview")
    msg, _ = client.predict(*widgets(), api_name="/finetune_preview")
    assert "wordgroups" in msg


def test_emergence_tab_sweeps_the_embedded_checkpoints(client):
    preset = client.predict("Embedded default model across training (offline)", api_name="/emergence_preset")
    assert preset[1] == "default" and preset[3] == "recall"
    assert preset[4:] == (4, "nearest") or list(preset[4:]) == [4, "nearest"]
    msg, plot, table = client.predict("checkpoints", "default", "", "recall", 4, "nearest", 1, 0, "step",
                                      api_name="/emergence_sweep")
    from core.models.embedded import find_embedded
    n = len(find_embedded("default").checkpoints)
    assert f"{n} points" in msg
    assert [r[1] for r in table["data"]][:2] == [0, 250]
    acc = [r[3] for r in table["data"]]
    fig = figure(plot)
    curve = next(t for t in fig["data"] if t["name"] == "accuracy")
    assert list(curve["x"]) == [r[1] for r in table["data"]] and np.allclose(list(curve["y"]), acc, atol=1e-4)  # the table (4 decimals), drawn
    assert axis_titles(fig)["xaxis"] == "training step"
    assert acc[0] < 0.2 and acc[-1] >= 0.9  # recall at k=4: chance at step 0, learnt by the end
    heads_plot, heat = client.predict("checkpoints", "default", "", api_name="/emergence_heads")
    lines, grid = figure(heads_plot), figure(heat)
    assert {t["name"] for t in lines["data"]} >= {f"L{i}H{h}" for i in range(2) for h in range(4)}
    (h,) = grid["data"]
    assert h["type"] == "heatmap" and h["z"].shape == (n, 8)  # every checkpoint x every head
    assert axis_titles(grid) == {"yaxis": "checkpoint", "xaxis": "head"}
    assert h["z"][-1].max() > h["z"][0].max()  # an induction head forms over training
    with pytest.raises(AppError, match="Name the model"):
        client.predict("models", "", "", "recall", 4, "nearest", 1, 24, "step", api_name="/emergence_sweep")
