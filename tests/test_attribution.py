"""Attribution engine: completeness, ablation exactness, contrast, rows, and clear errors."""
import numpy as np
from dataclasses import replace

import pytest
import torch

from core.attribution.attribute import _causal_logprobs, anchor_text, attribute
from core.attribution.types import METHODS
from core.errors import UserError
from core.models.loading import load_model
from core.models.types import ModelSpec

PROMPT = "Review : the good movie\nSentiment : positive\n\nReview : the bad movie\nSentiment :"
SEGMENTS = ["Review : the good movie\nSentiment : positive\n\n", "Review : the bad movie\nSentiment :"]


@pytest.fixture(scope="module")
def handles(tiny_models):
    return {n: load_model(ModelSpec(str(tiny_models[n]))) for n in ("gpt2", "neox", "llama", "bert_cls")}


def logprob(handle, prompt, target):
    """log p(target | anchor + prompt), computed independently of the attribution code paths."""
    tok = handle.tokenizer
    p = tok(anchor_text(handle) + prompt)["input_ids"]
    c = tok(target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return float(_causal_logprobs(handle.model, torch.tensor([p + c]), len(p), torch.tensor(c)).sum())


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama"])
@pytest.mark.parametrize("granularity", ["token", "word", "segment"])
def test_integrated_gradients_completeness(handles, name, granularity):
    h = handles[name]
    r = attribute(h, PROMPT, " positive", "ig", granularity, segments=SEGMENTS, n_steps=64)
    gap = r.target_logprob - r.baseline_logprob
    assert abs(gap) > 1e-4
    assert abs(r.scores.sum() - gap) <= 0.05 * abs(gap)
    assert abs(r.convergence_delta) <= 0.05 * abs(gap)
    assert r.target_logprob == pytest.approx(logprob(h, PROMPT, " positive"), abs=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_feature_ablation_equals_measured_change(handles, name):
    h = handles[name]
    r = attribute(h, PROMPT, " positive", "ablation", "segment", segments=SEGMENTS)
    full = logprob(h, PROMPT, " positive")
    for i in range(len(SEGMENTS)):
        without = "".join(s for j, s in enumerate(SEGMENTS) if j != i)
        assert r.scores[i] == pytest.approx(full - logprob(h, without, " positive"), abs=1e-4)


def test_shapley_is_efficient_and_rows_sum(handles):
    h = handles["neox"]
    r = attribute(h, PROMPT, " positive w3", "shapley", "word", n_samples=8)
    assert r.matrix.shape == (2, len(PROMPT.split()))  # one row per target token
    assert r.scores.sum() == pytest.approx(r.target_logprob - r.baseline_logprob, abs=1e-4)


def test_contrastive_is_target_minus_foil(handles):
    h = handles["llama"]
    both = attribute(h, PROMPT, " positive", "ig", "segment", foil=" negative", segments=SEGMENTS)
    pos = attribute(h, PROMPT, " positive", "ig", "segment", segments=SEGMENTS)
    neg = attribute(h, PROMPT, " negative", "ig", "segment", segments=SEGMENTS)
    np.testing.assert_allclose(both.scores, pos.scores - neg.scores, atol=1e-6)
    assert both.target_logprob == pytest.approx(pos.target_logprob - neg.target_logprob, abs=1e-6)
    assert both.matrix.shape == (1, 2) and "negative" in both.target_tokens[0]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_a_causal_lm(handles, method):
    r = attribute(handles["gpt2"], PROMPT, " positive", method, "word", n_samples=8, n_steps=8)
    assert r.matrix.shape[1] == len(PROMPT.split()) and np.isfinite(r.matrix).all()
    d = r.to_dict()
    assert set(d) == {"segments", "scores", "matrix", "target_tokens", "target_logprob", "baseline_logprob",
                      "convergence_delta"} | ({"convergence"} if method == "ig" else set())


def test_greedy_continuation_rows(handles):
    r = attribute(handles["llama"], PROMPT, None, "saliency", "token", generate=3)
    assert r.matrix.shape[0] == 3 and len(r.target_tokens) == 3


def test_classifier_label(handles):
    r = attribute(handles["bert_cls"], "the good movie", label="positive", method="ig", granularity="word")
    assert r.segments == ["the", " good", " movie"] and r.target_tokens == ["positive"]
    assert r.scores.sum() == pytest.approx(r.target_logprob - r.baseline_logprob, abs=1e-4)


def test_bad_inputs(handles):
    h = handles["gpt2"]
    with pytest.raises(UserError, match="target is empty"):
        attribute(h, PROMPT, "  ", "ig")
    with pytest.raises(UserError, match="cannot be tokenized"):
        attribute(h, PROMPT, " zebra", "ig")
    with pytest.raises(UserError, match="do not add up to the prompt"):
        attribute(h, PROMPT, " positive", "ig", "segment", segments=["Review : the good", "movie"])
    with pytest.raises(UserError, match="prompt is empty"):
        attribute(h, " ", " positive", "ig")
    with pytest.raises(UserError, match="does not support seq cls"):
        attribute(handles["bert_cls"], "the good movie", label="positive", method="ablation")
    with pytest.raises(UserError, match="Unknown method"):
        attribute(h, PROMPT, " positive", "magic")
    with pytest.raises(UserError, match="must be a number"):
        attribute(h, PROMPT, " positive", "ig", n_steps="many")
    with pytest.raises(UserError, match="reads at most 64"):
        attribute(h, " ".join(["the"] * 80), " positive", "ig")
    with pytest.raises(UserError, match="GB per integration step"):
        from core.attribution.attribute import internal_batch_size
        internal_batch_size(h, 64, 64, budget_bytes=1000)


def test_cancel_stops_a_running_attribution(tiny_models):
    """engine.cancel(session, tab) during a run stops it at the next model call, long before it would end.

    The cancel is sent from inside the first model call (a forward hook), so the test needs no
    threads and cannot race.
    """
    from core.attribution.types import Cancelled
    from core.engine import Engine
    from core.models.types import AppConfig

    engine = Engine(AppConfig(model=None))
    key = engine.models.load(ModelSpec(str(tiny_models["llama"]))).key
    calls = []
    from core.attribution.requests import AttributionRequest
    req = AttributionRequest(model=key, prompt=PROMPT, target=" positive", method="ig", n_steps=20000).check()

    def cancel_on_first_call(_module, _args, _out):
        calls.append(1)
        engine.cancel("session-1", "attribution")
        engine.cancel("session-2", "attribution")  # another session's cancel is not this run's

    hook = engine.runtime.registry.get(key).model.register_forward_hook(cancel_on_first_call)
    try:
        with pytest.raises(Cancelled, match="cancelled"):
            with engine.job("session-1", "attribution") as job:
                engine.attribution.run(req, job)
    finally:
        hook.remove()
    assert len(calls) <= 2  # 20,000 steps at <= 64 per call would have been >= 313 calls
    with engine.job("session-1", "attribution") as job:  # a new run of the same session starts uncancelled
        r = engine.attribution.run(replace(req, n_steps=8), job)
    assert r.matrix.shape[0] == 1  # a new run on the same job starts uncancelled


def test_should_stop_is_checked_by_perturbation_methods(handles):
    from core.attribution.types import Cancelled
    with pytest.raises(Cancelled):
        attribute(handles["gpt2"], PROMPT, " positive", "shapley", "word", should_stop=lambda: True)


def test_kept_features_score_zero_and_ig_stays_complete(tiny_models):
    """Holding a feature at its input value: it scores 0 and IG still sums to f(x) - f(partial baseline)."""
    handle = load_model(ModelSpec(str(tiny_models["neox"])))
    segs = ["w1 w2 ; ", "w3 w4 ; ", "w5"]
    r = attribute(handle, "".join(segs), "w6", "ig", "segment", segments=segs, n_steps=64, keep=[-1])
    assert r.kept == (2,) and r.scores[2] == 0 and r.to_dict()["kept"] == [2]
    assert abs(r.scores.sum() - (r.target_logprob - r.baseline_logprob)) < 0.05 * abs(r.target_logprob - r.baseline_logprob) + 1e-3
    full = attribute(handle, "".join(segs), "w6", "ig", "segment", segments=segs, n_steps=64)
    assert full.baseline_logprob != r.baseline_logprob  # the query is in the baseline prompt now
    with pytest.raises(UserError, match="no baseline"):
        attribute(handle, "".join(segs), "w6", "ablation", "segment", segments=segs, keep=[-1])
    with pytest.raises(UserError, match="Cannot keep feature 5"):
        attribute(handle, "".join(segs), "w6", "ig", "segment", segments=segs, keep=[5])
    with pytest.raises(UserError, match="nothing is left"):
        attribute(handle, "".join(segs), "w6", "ig", "segment", segments=segs, keep=[0, 1, 2])


def test_token_features_keep_the_spaces_of_the_prompt():
    from core.models.loading import load_model
    from core.attribution.attribute import split_prompt
    handle = load_model(ModelSpec("default"))  # a word-level tokenizer: its tokens carry no spaces
    prompt = "w3 = w17 ;  w8 =\\nw3 ="
    texts, spans = split_prompt(handle, prompt, "token")
    assert "".join(texts) == prompt and texts[1] == " =" and len(texts) == len(spans)
