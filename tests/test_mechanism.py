"""The mechanism lab: task vectors and function vectors. Their hooks checked against what they must equal on
tiny GPT-2, GPT-NeoX and Llama (grouped-query) models; the lab through the engine and the CLI's JSON contract."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import UserError
from core.mechanism import vectors as V
from core.mechanism.run import function_vector, task_vector
from core.models.loading import load_model
from core.models.types import ModelSpec
from core.tasks import Template, task_from_tables

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("gpt2", "neox", "llama")


def successor_task() -> "Task":  # noqa: F821
    """w_i -> w_(i+1), in the tiny models' vocabulary."""
    rows = pd.DataFrame({"input": [f"w{i}" for i in range(30)], "output": [f"w{i + 1}" for i in range(30)]})
    return task_from_tables(rows.iloc[:20], rows.iloc[20:], Template(input="{input} =", fewshot_delimiter=" ; "),
                            "output", None, name="successor")


@pytest.fixture(scope="module")
def handles(tiny_models):
    return {a: load_model(ModelSpec(model=str(tiny_models[a]))) for a in ARCHS}


PROMPTS = ["w1 = w2 ; w5 = w6 ; w9 =", "w3 =", "w7 = w8 ; w11 ="]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_padded_batch_reads_each_row_as_alone(handles, arch):
    h = handles[arch]
    batch = V.make_batch(h, PROMPTS, [" w10", " w4", " w12"])
    states = V.last_states(h, batch)  # (layers, rows, d)
    assert states.shape[:2] == (h.info.n_layers, 3)
    for i, p in enumerate(PROMPTS):
        alone = V.last_states(h, V.make_batch(h, [p], [" w1"]))
        assert torch.allclose(states[:, i], alone[:, 0], atol=1e-5), (arch, i)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_last_layers_state_patched_in_gives_that_prompts_prediction(handles, arch):
    """After the last block only the final norm and the unembedding read a position: patching prompt P's last
    state into prompt Q there must give P's next-token logits exactly. (After block 0 it must not.)"""
    h = handles[arch]
    p, q = V.make_batch(h, [PROMPTS[0]], [" w10"]), V.make_batch(h, [PROMPTS[1]], [" w4"])
    state = V.last_states(h, p)
    plain_p = V.patched_logits(h, p, 0, torch.zeros(state.shape[-1]), mode="add")  # adding zero changes nothing
    with torch.no_grad():
        ref = h.model(input_ids=p.ids).logits[0, -1].float()
    assert torch.allclose(plain_p[0], ref, atol=1e-5)
    last = h.info.n_layers - 1
    assert torch.allclose(V.patched_logits(h, q, last, state[last, 0])[0], ref, atol=1e-4)
    assert not torch.allclose(V.patched_logits(h, q, 0, state[0, 0])[0], ref, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_heads_contributions_sum_to_the_attention_output(handles, arch):
    """Each head's output through its own slice of the output projection: summed over the heads (plus the bias)
    they are the layer's attention output at that position — what a function vector adds up."""
    from core.interventions.hooks import out_projections
    h = handles[arch]
    batch = V.make_batch(h, [PROMPTS[0]], [" w10"])
    means = V.head_outputs(h, batch)  # one prompt: the mean is its own output
    for layer, proj in enumerate(out_projections(h.model)):
        got = {}
        handle = proj.register_forward_hook(lambda m, a, out: got.setdefault("y", out[0, -1].float()))
        with torch.no_grad():
            h.model(input_ids=batch.ids)
        handle.remove()
        bias = proj.bias.float() if getattr(proj, "bias", None) is not None else 0
        total = sum(V.head_contribution(h, layer, i, means[layer, i]) for i in range(h.info.n_heads)) + bias
        assert torch.allclose(total, got["y"], atol=1e-5), (arch, layer)


@pytest.mark.parametrize("arch", ARCHS)
def test_indirect_effects_equal_one_head_patched_one_prompt_at_a_time(handles, arch):
    """The batched effects (padded rows, every row at its own last position) against a plain loop."""
    from core.interventions.hooks import head_dim, out_projections
    h = handles[arch]
    prompts, answers = PROMPTS, [" w10", " w4", " w12"]
    batch = V.make_batch(h, prompts, answers)
    means = torch.randn(h.info.n_layers, h.info.n_heads, head_dim(h.model)) * 0.5
    cie = V.head_indirect_effects_naive(h, batch, means)
    assert np.allclose(V.head_indirect_effects(h, batch, means), cie, atol=1e-6)  # the cached fast path
    d = head_dim(h.model)
    for layer, head in [(0, 1), (h.info.n_layers - 1, 3)]:
        rises = []
        for p, a in zip(prompts, answers):
            one = V.make_batch(h, [p], [a])
            base = torch.softmax(V._last_logits(h, one), -1)[0, one.gold[0]]

            def pre(_m, args):
                x = args[0].clone()
                x[0, -1, head * d:(head + 1) * d] = means[layer, head]
                return (x, *args[1:])
            hk = out_projections(h.model)[layer].register_forward_pre_hook(pre)
            with torch.no_grad():
                patched = torch.softmax(V._last_logits(h, one), -1)[0, one.gold[0]]
            hk.remove()
            rises.append(float(patched - base))
        assert cie[layer, head] == pytest.approx(np.mean(rises), abs=1e-6), (arch, layer, head)


def test_the_experiments_run_end_to_end_and_keep_their_shape(handles):
    h, task = handles["llama"], successor_task()
    tv = task_vector(h, task, k=3, limit=8, n_dummy=6)
    assert tv.layers == [0, 1, 2] and len(tv.accuracy) == 3 and tv.n == 8 and tv.n_dummy == 6
    assert all(0 <= a <= 1 for a in tv.accuracy) and tv.best_layer == int(np.argmax(tv.accuracy))
    fv = function_vector(h, task, k=3, limit=8)
    assert fv.cie.shape == (3, 4) and len(fv.top_heads) == V.default_head_count(3, 4) == 2
    assert fv.top_heads[0] == tuple(int(i) for i in np.unravel_index(np.argmax(fv.cie), fv.cie.shape))
    assert fv.fv_accuracy == fv.by_layer[fv.layer] and fv.norm > 0
    assert [e["prompt"] for e in fv.examples] == ["w20 =", "w21 =", "w22 ="] and fv.examples[0]["gold"] == "w21"
    d = h.model.config.hidden_size
    assert V.generate(h, "w3 = w4 ; w5 =", torch.zeros(d), 1) == V.generate(h, "w3 = w4 ; w5 =")  # + 0: as is
    big = torch.full((d,), 50.0)  # a large push does change what comes next
    assert V.generate(h, "w3 = w4 ; w5 =", big, 0) != V.generate(h, "w3 = w4 ; w5 =")
    pinned = function_vector(h, task, k=3, limit=8, heads=1, layer=0)
    assert pinned.layer == 0 and len(pinned.top_heads) == 1
    with pytest.raises(UserError, match="no layer 7"):
        function_vector(h, task, k=3, limit=8, layer=7)


def test_head_counts_scale_with_the_model():
    assert V.default_head_count(2, 4) == 2 and V.default_head_count(30, 9) == 6   # SmolLM2-135M: 270 heads
    assert V.default_head_count(28, 16) == 10                                      # GPT-J: the paper's 10


def test_the_cli_writes_the_contract_and_takes_a_csv_of_input_output(tmp_path):
    """``python -m core task-vector`` / ``function-vector`` (the issue's JSON contract) on the embedded default
    model, with a task given as a CSV of input,output columns and a changed demonstration separator."""
    rows = [{"input": f"w{i}", "output": f"w{i + 1}"} for i in range(100, 140)]
    pd.DataFrame(rows).to_csv(tmp_path / "succ.csv", index=False)
    env_runs = tmp_path / "runs"
    import os
    env = {**os.environ, "EMERGENCE_LAB_RUNS": str(env_runs)}
    out = tmp_path / "tv.json"
    res = subprocess.run([sys.executable, "-m", "core", "task-vector", "--model", "default", "--task",
                          str(tmp_path / "succ.csv"), "--k", "4", "--limit", "8", "--fewshot-delimiter", " ; ",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    tv = json.loads(out.read_text())
    assert {"layers", "accuracy", "icl_accuracy", "zero_shot_accuracy", "best_layer"} <= set(tv)
    assert len(tv["accuracy"]) == len(tv["layers"]) == 2 and tv["task"] == "succ"
    out = tmp_path / "fv.json"
    res = subprocess.run([sys.executable, "-m", "core", "function-vector", "--model", "default", "--task", "recall",
                          "--k", "4", "--limit", "8", "--heads", "3", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    fv = json.loads(out.read_text())
    assert {"cie", "top_heads", "layer", "zero_shot_accuracy", "fv_accuracy", "by_layer"} <= set(fv)
    assert np.array(fv["cie"]).shape == (2, 4) and len(fv["top_heads"]) == 3 and fv["task"] == "recall"
    from core.history.store import History
    labs = {r.lab for r in History(env_runs).runs()}
    assert labs == {"task-vector", "function-vector"}  # both kept in the History, as from the tab


def test_the_mechanism_tab_draws_both_vectors_and_the_history_draws_them_again(client, app_server):
    """Through the app's API as the tab calls it: a task vector and a function vector of recall on the embedded
    default model, their pictures, and the History's reopened figure of each."""
    from conftest import axis_titles, figure
    from ui.history_plots import figure_of
    engine, _ = app_server
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    form = ["el-2l-128", "recall", 4, 8, 0, None, "{input} ->", "\\n"]
    md, plot, _, path = client.predict(*form, api_name="/task_vector")
    assert "with the task vector of layer" in md and json.load(open(path))["task"] == "recall"
    fig = figure(plot)
    assert list(fig["data"][0]["x"]) == [0, 1] and axis_titles(fig)["xaxis"].startswith("layer")
    md, plot, table, path = client.predict(3, "w5 = w9 ; w5 =", *form, api_name="/function_vector")
    saved = json.load(open(path))
    assert table["headers"][:3] == ["prompt", "right answer", "without"] and len(table["data"]) == 4
    assert table["data"][0][0] == "w5 = w9 ; w5 =" and table["data"][1][1] != "—"  # typed, then task queries
    assert "function vector of heads" in md and len(saved["top_heads"]) == 3
    fig = figure(plot)
    grid = fig["data"][0]
    assert grid["type"] == "heatmap" and np.allclose(grid["z"], saved["cie"], atol=1e-6)
    assert sum(bool(t) for row in grid["text"] for t in row) == 3  # the heads summed, marked on the grid
    with pytest.raises(Exception, match="k is 1 to 64"):
        client.predict(3, "", "el-2l-128", "recall", 65, 8, 0, None, "{input} ->", "\\n", api_name="/function_vector")
    msg, plot, table = client.predict("models", "el-1l-64,el-2l-128", "", *form, api_name="/vector_series")
    assert "2 of 2 points measured" in msg and [r[0] for r in table["data"]] == ["el-1l-64", "el-2l-128"]
    fig = figure(plot)
    assert [t["name"] for t in fig["data"]][2:] == ["task vector (best layer)", "function vector (best layer)"]
    assert axis_titles(fig)["xaxis"] == "model"
    for lab in ("task-vector", "function-vector", "vector-series"):
        rec = engine.history.runs(lab=lab)[0]
        _, _, result = engine.history.reopen(rec.id)
        assert figure_of(rec, result) is not None and "el-2l-128" in rec.model


@pytest.mark.parametrize("arch", ARCHS)
def test_adding_a_vector_is_replacing_the_state_by_the_state_plus_it(handles, arch):
    """The function vector's addition checked by hand: adding v after block L equals writing (own state + v)."""
    h = handles[arch]
    batch = V.make_batch(h, PROMPTS, [" w10", " w4", " w12"])
    states = V.last_states(h, batch)
    v = torch.randn(states.shape[-1])
    for layer in range(h.info.n_layers):
        added = V.patched_logits(h, batch, layer, v, mode="add")
        for i in range(len(PROMPTS)):
            one = V.make_batch(h, [PROMPTS[i]], [" w1"])
            by_hand = V.patched_logits(h, one, layer, states[layer, i] + v)
            assert torch.allclose(added[i], by_hand[0], atol=1e-4), (arch, layer, i)


def test_a_cancelled_function_vector_leaves_no_hook_and_the_weights_as_they_were(handles):
    from core.errors import Cancelled
    h = handles["neox"]
    before = {k: v.clone() for k, v in h.model.state_dict().items()}
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1  # cancelled while the heads' effects are measured
    with pytest.raises(Cancelled):
        function_vector(h, successor_task(), k=3, limit=8, should_stop=stop)
    function_vector(h, successor_task(), k=3, limit=8)  # and a whole run
    for m in h.model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, type(m).__name__
    assert all(torch.equal(before[k], v) for k, v in h.model.state_dict().items())


def test_both_vectors_across_a_series_of_models(tmp_path):
    """Where the mechanism appears: both vectors at every point of a series (here two embedded models and a
    missing one), through the engine, kept in the History."""
    from core.engine import Engine
    from core.mechanism.requests import VectorSeriesRequest
    from core.models.types import AppConfig
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    req = VectorSeriesRequest.from_mapping(dict(source="models", models=f"el-1l-64,el-2l-128,{tmp_path / 'nope'}",
                                                task="recall", k=4, limit=8))
    points = engine.mechanism.series(req)
    assert [p.model for p in points][:2] == ["el-1l-64", "el-2l-128"] and points[0].n_params < points[1].n_params
    for p in points[:2]:
        assert p.error is None and 0 <= p.function_vector_accuracy <= 1 and p.top_heads
        assert p.task_vector_layer is not None and p.icl_accuracy is not None
    assert "nope" in points[2].error
    (rec,) = engine.history.runs(lab="vector-series")
    assert len(engine.history.reopen(rec.id)[2]) == 3
