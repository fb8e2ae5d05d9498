"""Served models (OpenAI-compatible completions): scoring, generation, series and perturbation attribution equal
the local model's; what needs weights is refused plainly; a slow, failing or unreachable server is a message.
The real llama.cpp server is tested in tests/test_served_llama.py."""
import json
import socket

import numpy as np
import pytest

from core.engine import Engine
from core.errors import ModelLoadError, UserError
from core.models.requests import LoadRequest
from core.models.types import AppConfig
from served_stub import Stub


@pytest.fixture(scope="module")
def local(tiny_models):
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    return load_model(ModelSpec(str(tiny_models["llama"])))


@pytest.fixture
def stub(local):
    s = Stub(local.model, local.tokenizer)
    yield s
    s.close()


@pytest.fixture
def engine(tmp_path):
    return Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))


def served(stub) -> str:
    return f"openai+{stub.url}#stub-model"


def test_few_shot_through_the_server_equals_the_local_scorer(engine, stub, local):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    key = engine.models.load(LoadRequest(model=served(stub))).key
    assert engine.runtime.registry.get(key).model.mode == "echo"  # its echo agrees with its next-token log-probabilities
    info = engine.models.info(key)
    assert info.source == "served" and info.kind == "causal_lm" and "no attention weights" in info.origin
    task = load_builtin("sentiment")
    for config in (FewShotConfig(k=0, limit=10), FewShotConfig(k=3, selection="random", seed=1, limit=10,
                                                               calibrate=True)):
        theirs = run_fewshot(engine.runtime.registry.get(key), task, config)
        ours = run_fewshot(local, task, config)
        assert np.allclose([e.choice_logprobs for e in theirs.examples], [e.choice_logprobs for e in ours.examples],
                           atol=1e-4)
        assert theirs.metrics.accuracy == ours.metrics.accuracy
        assert [e.prediction_calibrated for e in theirs.examples] == [e.prediction_calibrated for e in ours.examples]


def test_a_server_whose_echo_is_shifted_is_scored_by_forced_decoding(engine, stub, local):
    """llama-cpp-python's server echoes each prompt token's log-probability from the next position's
    distribution; the client notices at load and forces each continuation token instead."""
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    stub.shift = True
    handle = engine.runtime.registry.get(engine.models.load(LoadRequest(model=served(stub))).key)
    assert handle.model.mode == "forced"
    config = FewShotConfig(k=2, limit=8)
    theirs = run_fewshot(handle, load_builtin("sentiment"), config)
    ours = run_fewshot(local, load_builtin("sentiment"), config)
    assert np.allclose([e.choice_logprobs for e in theirs.examples], [e.choice_logprobs for e in ours.examples],
                       atol=1e-4)
    assert theirs.metrics.accuracy == ours.metrics.accuracy


def test_greedy_generation_through_the_server(engine, stub, local):
    from core.fewshot.scoring import generate_greedy
    handle = engine.runtime.registry.get(engine.models.load(LoadRequest(model=served(stub))).key)
    a = generate_greedy(handle.model, handle.tokenizer, ["w1 w2 w3", "w5 w5"], 3, stop=())
    b = generate_greedy(local.model, local.tokenizer, ["w1 w2 w3", "w5 w5"], 3, stop=())
    assert [g.text.strip() for g in a] == [g.text.strip() for g in b]
    assert all(g.token_ids for g in a)  # tokenized by the server, for the token edit distance


def test_what_needs_the_weights_is_refused_with_the_way_out(engine, stub):
    from core.attention.requests import AttentionRequest, HeadRolesRequest
    from core.attribution.requests import AttributionRequest
    from core.interventions.requests import LensRequest
    key = engine.models.load(LoadRequest(model=served(stub))).key
    for call in (lambda: engine.attention.run(AttentionRequest(model=key, text="w1 w2")),
                 lambda: engine.attention.head_scores(HeadRolesRequest(model=key)),
                 lambda: engine.interventions.logit_lens(LensRequest.from_mapping(dict(model=key, text="w1 w2"))),
                 lambda: engine.attribution.run(AttributionRequest(model=key, prompt="w1 w2", target=" w3", method="ig"))):
        with pytest.raises(UserError, match="no attention weights or gradients. Load the model locally"):
            call()


def test_perturbation_attribution_of_a_served_model_equals_the_local_one(engine, stub, tiny_models):
    from core.attribution.requests import AttributionRequest
    remote = engine.models.load(LoadRequest(model=served(stub))).key
    near = engine.models.load(LoadRequest(model=str(tiny_models["llama"]))).key
    req = dict(prompt="w3 = w17 ; w8 = w42 ; w3 =", target=" w17", method="ablation", granularity="segment",
               separator=" ; ")
    a = engine.attribution.run(AttributionRequest.from_mapping({**req, "model": remote}))
    b = engine.attribution.run(AttributionRequest.from_mapping({**req, "model": near}))
    assert a.segments == b.segments and a.model_key == remote
    assert np.allclose(a.scores, b.scores, atol=1e-4)
    assert a.target_logprob == pytest.approx(b.target_logprob, abs=1e-4)


def test_a_series_of_served_models(engine, stub, local, tiny_models):
    from core.emergence.requests import SweepSeriesRequest
    other = Stub(local.model, local.tokenizer, name="second")
    try:
        names = f"{served(stub)},openai+{other.url}#second"
        req = SweepSeriesRequest.from_mapping(dict(source="models", models=names, task="sentiment", k=2, limit=8,
                                                   selection="random", seeds=1))
        points = engine.emergence.sweep(req)
        assert [p.error for p in points] == [None, None]
        assert points[0].metrics == points[1].metrics  # the same weights behind both
    finally:
        other.close()


def test_transient_failures_are_retried_and_lasting_ones_are_a_message(stub, local):
    from core.models.served import Client, ServedModel, parse_endpoint
    ep = parse_endpoint(served(stub))
    model = ServedModel(ep, Client(ep, timeout=5, retries=2))
    stub.fail_next = 2
    assert model.echo("w1 w2").logprobs[1] is not None  # two 500s, then an answer
    stub.fail_next = 10
    with pytest.raises(UserError, match="unreachable or failing"):
        model.echo("w1 w2")
    stub.fail_next = 0
    slow = ServedModel(ep, Client(ep, timeout=0.3, retries=1))
    stub.delay = 1.0
    with pytest.raises(UserError, match="did not answer within 0.3 s"):  # not retried: it would wait again
        slow.echo("w1 w2")
    stub.delay = 0.0


def test_a_server_without_prompt_logprobs_or_the_model_is_refused_at_load(engine, stub):
    stub.logprobs = False
    with pytest.raises(ModelLoadError, match="returns no log-probabilities"):
        engine.models.load(LoadRequest(model=served(stub)))
    stub.logprobs = True
    with pytest.raises(ModelLoadError, match="does not serve 'other'"):
        engine.models.load(LoadRequest(model=f"openai+{stub.url}#other"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    with pytest.raises(UserError, match="unreachable"):
        engine.models.load(LoadRequest(model=f"openai+http://127.0.0.1:{port}/v1#m"))
    with pytest.raises(ModelLoadError, match="not a served model's name"):
        engine.models.load(LoadRequest(model="openai+ftp://x"))


def test_an_exposed_server_calls_only_the_endpoints_it_was_started_with(tmp_path, stub):
    from core.errors import PathNotAllowedError
    exposed = Engine(AppConfig(model=None, runs_dir=tmp_path, host="0.0.0.0", offline=True))
    with pytest.raises(PathNotAllowedError, match="only calls the served models it was started with"):
        exposed.models.load(LoadRequest(model=served(stub)))
    allowed = Engine(AppConfig(model=None, runs_dir=tmp_path, host="0.0.0.0", offline=True, endpoints=(stub.url,)))
    assert allowed.models.load(LoadRequest(model=served(stub))).source == "served"


def test_the_api_key_comes_from_the_environment_and_is_never_stored(stub, monkeypatch):
    from core.models.served import Client, parse_endpoint
    ep = parse_endpoint(served(stub) + ";key=EL_TEST_KEY")
    assert ep.key_env == "EL_TEST_KEY" and "secret" not in ep.name
    with pytest.raises(UserError, match="EL_TEST_KEY is not set"):
        Client(ep).request("GET", f"{ep.base_url}/models")
    monkeypatch.setenv("EL_TEST_KEY", "secret")
    assert Client(ep)._headers() == {"Authorization": "Bearer secret"}


def test_the_cli_scores_a_served_model(stub, capsys):
    from core.cli import main
    main(["fewshot", "--model", served(stub), "--task", "sentiment", "--k", "2", "--limit", "6"])
    out = json.loads(capsys.readouterr().out)
    assert len(out["examples"]) == 6 and all(len(e["choice_logprobs"]) == 2 for e in out["examples"])
