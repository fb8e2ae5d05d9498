"""Interventions: head ablation, the ablation scan, activation patching and the logit lens, checked against
independent computations in plain transformers forward passes."""
import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import Cancelled
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.interventions.ablation import run_ablated, scan
from core.interventions.hooks import ablated, head_dim, out_projections, parse_heads
from core.interventions.patching import logit_lens, patch
from core.models.loading import load_model
from core.models.types import ModelSpec
from core.tasks import load_builtin

ROOT = Path(__file__).resolve().parent.parent
TEXT = "w1 w2 w3 w4 w1 w2 w3"


@pytest.fixture(scope="module")
def handles(tiny_models):
    return {n: load_model(ModelSpec(str(tiny_models[n]))) for n in ("gpt2", "neox", "llama")}


@pytest.fixture(scope="module")
def default():
    return load_model(ModelSpec("default"))


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def zeroed_copy(model, layer: int, head: int):
    """The reference: a copy whose output projection ignores that head's slice of its input."""
    ref = copy.deepcopy(model)
    proj, d = out_projections(ref)[layer], head_dim(ref)
    with torch.no_grad():
        if type(proj).__name__ == "Conv1D":       # GPT-2: weight is (in, out)
            proj.weight[layer * 0 + head * d:(head + 1) * d, :] = 0
        else:                                      # nn.Linear: weight is (out, in)
            proj.weight[:, head * d:(head + 1) * d] = 0
    return ref


def logits(model, text_ids):
    with torch.no_grad():
        return model(text_ids).logits.float()


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_zero_ablation_equals_zeroing_the_heads_slice_and_nothing_is_changed(handles, arch):
    h = handles[arch]
    ids = torch.tensor([h.tokenizer(TEXT)["input_ids"]])
    before = weights_hash(h.model)
    plain = logits(h.model, ids)
    with ablated(h.model, []):
        assert torch.equal(logits(h.model, ids), plain)  # no head: bit for bit
    for layer, head in ((0, 1), (1, 3)):
        with ablated(h.model, [(layer, head)]):
            got = logits(h.model, ids)
        ref = logits(zeroed_copy(h.model, layer, head).eval(), ids)
        assert (got - ref).abs().max() <= 1e-5
        assert (got - plain).abs().max() > 1e-4  # the head mattered at all
    assert weights_hash(h.model) == before
    assert all(not p._forward_pre_hooks for p in out_projections(h.model))
    if arch == "llama":
        assert h.model.config.num_key_value_heads < h.model.config.num_attention_heads  # grouped-query


def test_ablation_is_undone_when_the_run_is_cancelled(default):
    before = weights_hash(default.model)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1
    with pytest.raises(Cancelled):
        run_ablated(default, load_builtin("recall"), FewShotConfig(k=4, selection="nearest"), [(1, 3)], "zero",
                    should_stop=stop)
    assert weights_hash(default.model) == before
    assert all(not p._forward_pre_hooks for p in out_projections(default.model))


def test_no_heads_reproduces_the_plain_run_bit_for_bit(default):
    task, config = load_builtin("recall"), FewShotConfig(k=4, selection="nearest", limit=16)
    a = run_fewshot(default, task, config)
    b = run_ablated(default, task, config, parse_heads("", 2, 4))
    assert [e.choice_logprobs for e in a.examples] == [e.choice_logprobs for e in b.examples]


def test_the_scan_matches_an_independent_computation(default):
    task, config = load_builtin("recall"), FewShotConfig(k=4, selection="nearest", limit=24)
    res = scan(default, task, config)
    assert res.accuracy.shape == (2, 4)
    for layer, head in ((0, 3), (1, 3)):
        ref = copy.copy(default)
        ref.model = zeroed_copy(default.model, layer, head).eval()
        run = run_fewshot(ref, task, config)
        assert res.accuracy[layer, head] == pytest.approx(run.metrics.accuracy)
        assert res.logp[layer, head] == pytest.approx(run.metrics.mean_gold_logprob, abs=1e-4)
    d = res.to_dict()
    assert {"layers", "heads", "base", "grid"} <= set(d) and set(d["grid"][1][3]) == {"accuracy", "logp"}


def test_mean_ablation_writes_the_heads_mean(default):
    task, config = load_builtin("recall"), FewShotConfig(k=4, selection="nearest", limit=8)
    zero = run_ablated(default, task, config, [(1, 3)], "zero")
    mean = run_ablated(default, task, config, [(1, 3)], "mean")
    assert [e.choice_logprobs for e in zero.examples] != [e.choice_logprobs for e in mean.examples]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_patching_the_last_layer_restores_all_and_an_unchanged_position_nothing(handles, arch):
    h = handles[arch]
    res = patch(h, "w1 w2 w3 w4 w1 w2", "w1 w2 w3 w5 w1 w2", " w3")
    assert res.residual.shape[0] == h.info.n_layers and res.heads.shape == (h.info.n_layers, h.info.n_heads)
    assert res.residual[-1, -1] == pytest.approx(1.0, abs=1e-4)   # the whole stream where the answer is read
    assert abs(res.residual[0, 0]) <= 1e-4                        # a position both prompts share: nothing


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_attribution_patching_is_the_derivative_of_patching_a_little(handles, arch):
    """Each attribution-patching entry is the first-order term of the real patch: moving the activation a small
    step (1e-3) from corrupted towards clean changes log p(target) by that step times the entry (times the gap).
    The model and the log-probabilities are taken in float64 here, so that the step is not lost in rounding."""
    from core.interventions.hooks import decoder_layers
    from core.interventions.patching import _pair
    h = copy.copy(handles[arch])
    h.model = copy.deepcopy(h.model).double()
    clean, corrupt, target = "w1 w2 w3 w4 w1 w2", "w1 w2 w3 w5 w1 w2", " w3"
    res = patch(h, clean, corrupt, target)
    assert res.residual_atp.shape == res.residual.shape and res.heads_atp.shape == res.heads.shape
    gap = res.logprob_clean - res.logprob_corrupt
    x_clean, t_ids = (torch.tensor([x]) for x in _pair(h.tokenizer, clean, target))
    x_corrupt = torch.tensor([_pair(h.tokenizer, corrupt, target)[0]])
    n_t = t_ids.shape[1]

    def logp(x) -> float:
        with torch.no_grad():
            lp = torch.log_softmax(h.model(x).logits[0, -n_t - 1:-1].double(), -1)
        return float(lp.gather(-1, x[0, -n_t:, None]).sum())

    def nudged(module, pre, select, eps=1e-3):
        got = {}
        grab = (module.register_forward_pre_hook(lambda m, a: got.setdefault("x", a[0].detach().clone())) if pre
                else module.register_forward_hook(lambda m, a, o: got.setdefault("x", (o[0] if isinstance(o, tuple)
                                                                                         else o).detach().clone())))
        logp(x_clean)
        grab.remove()

        def move(x):
            x = x.clone()
            x[select] = x[select] + eps * (got["x"][select] - x[select])
            return x
        hook = (module.register_forward_pre_hook(lambda m, a: (move(a[0]), *a[1:])) if pre
                else module.register_forward_hook(lambda m, a, o: (move(o[0]), *o[1:]) if isinstance(o, tuple)
                                                  else move(o)))
        moved = logp(x_corrupt)
        hook.remove()
        return (moved - logp(x_corrupt)) / eps / gap

    pos = res.tokens.index(next(t for t, c in zip(res.tokens, res.clean_tokens) if t != c))  # the corrupted token
    for layer in range(h.info.n_layers):
        assert nudged(decoder_layers(h.model)[layer], False, (0, pos)) == pytest.approx(
            res.residual_atp[layer, pos], rel=0.02, abs=1e-3), (arch, layer)
    d = head_dim(h.model)
    for head in range(h.info.n_heads):
        assert nudged(out_projections(h.model)[-1], True, (0, slice(None), slice(head * d, (head + 1) * d))) == \
            pytest.approx(res.heads_atp[-1, head], rel=0.02, abs=1e-3), (arch, head)
    assert res.to_dict()["rank_correlation"]["residual"] is not None


def test_patching_refuses_prompts_of_different_lengths(handles):
    from core.errors import UserError
    with pytest.raises(UserError, match="same length in tokens"):
        patch(handles["gpt2"], "w1 w2 w3", "w1 w2", " w3")


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_the_logit_lens_last_layer_is_the_models_own_distribution(handles, arch):
    h = handles[arch]
    res = logit_lens(h, TEXT, target=" w4")
    ids = torch.tensor([h.tokenizer(TEXT)["input_ids"]])
    own = torch.softmax(logits(h.model, ids)[0], -1).numpy()
    assert np.abs(res.final - own).max() <= 1e-5
    assert res.target_prob.shape == (h.info.n_layers, ids.shape[1])


def test_cli_ablation_scan_patch_and_lens(tmp_path):
    from test_cli import run  # the CLI's entry point, in this process
    out = tmp_path / "scan.json"
    run("ablation-scan", "--model", "default", "--task", "recall", "--k", "4", "--limit", "12", "--out", str(out))
    d = json.loads(out.read_text())
    assert d["layers"] == 2 and d["heads"] == 4 and len(d["grid"]) == 2 and "accuracy" in d["base"]
    # the same task from CSV files, with the Few-shot command's flags: the same grid (it took built-in tasks only)
    from core.tasks import load_builtin
    task = load_builtin("recall")
    task.train.to_csv(tmp_path / "train.csv", index=False)
    task.test.to_csv(tmp_path / "test.csv", index=False)
    csv_out = tmp_path / "scan-csv.json"
    run("ablation-scan", "--model", "default", "--train", str(tmp_path / "train.csv"), "--test",
        str(tmp_path / "test.csv"), "--template", task.template.input, "--label-column", "value", "--choices",
        ",".join(task.choices), "--fewshot-delimiter", task.template.fewshot_delimiter, "--k", "4", "--limit", "12",
        "--out", str(csv_out))
    c = json.loads(csv_out.read_text())
    assert c["task"] == "train" and c["base"] == d["base"] and c["grid"] == d["grid"]
    p = tmp_path / "patch.json"
    run("patch", "--model", "default", "--clean", "w3 = w17 ; w8 = w42 ; w8 =", "--corrupt",
        "w3 = w17 ; w8 = w40 ; w8 =", "--target", " w42", "--out", str(p))
    assert len(json.loads(p.read_text())["residual"]) == 2
    lens = tmp_path / "lens.json"
    run("logit-lens", "--model", "default", "--text", "w3 = w17 ; w3 =", "--target", " w17", "--out", str(lens))
    assert len(json.loads(lens.read_text())["target_prob"]) == 2
    fs = tmp_path / "fs.json"
    run("fewshot", "--model", "default", "--task", "recall", "--k", "4", "--limit", "8", "--ablate-heads", "1.3",
        "--out", str(fs))
    assert "accuracy" in json.loads(fs.read_text())


def test_ablation_composes_with_attention_attribution_and_the_emergence_series(tmp_path):
    from core.attention.requests import AttentionRequest
    from core.attribution.requests import AttributionRequest
    from core.emergence.requests import SweepSeriesRequest
    from core.engine import Engine
    from core.models.types import AppConfig
    engine = Engine(AppConfig(runs_dir=tmp_path, model="default"))
    key = engine.models.load_default().key
    text = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 ="
    plain = engine.attention.run(AttentionRequest(model=key, text=text, layer=1).check())
    cut = engine.attention.run(AttentionRequest(model=key, text=text, layer=1, ablate_heads="0.3").check())
    assert np.abs(plain.layers[1] - cut.layers[1]).max() > 1e-3  # layer 1 reads what L0.H3 wrote
    assert np.array_equal(engine.attention.run(AttentionRequest(model=key, text=text, layer=1).check()).layers[1],
                          plain.layers[1])  # undone after the call
    a = engine.attribution.run(AttributionRequest(model=key, prompt=text, target=" w42", method="ablation",
                                            granularity="word").check())
    b = engine.attribution.run(AttributionRequest(model=key, prompt=text, target=" w42", method="ablation",
                                            granularity="word", ablate_heads="0.3").check())
    assert a.target_logprob > b.target_logprob + 1.0  # recall needs the previous-token head
    req = dict(source="checkpoints", models="default", task="recall", k=4, selection="nearest", seeds=1, limit=24)
    whole = engine.emergence.sweep(SweepSeriesRequest.from_mapping(req))
    without = engine.emergence.sweep(SweepSeriesRequest.from_mapping(dict(req, ablate_heads="0.3")))
    assert whole[-1].metrics["accuracy"] >= 0.9 and without[-1].metrics["accuracy"] <= 0.3
