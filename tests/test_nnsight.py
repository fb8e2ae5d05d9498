"""The nnsight backend: every intervention and the few-shot log-likelihoods through nnsight traces equal the
project's own hook implementation on tiny GPT-2, GPT-NeoX and Llama (grouped-query) models, locally and through
nnsight's local simulation of a remote (NDIF) request; and the app keeps working without nnsight.

The simulation swaps modules out of ``sys.modules`` while it deserialises a request, and the modules imported then
stay mixed with the process's own (an ``httpx.Timeout`` of one copy is then not one of the other's), so its runs go
in their own process: ``test_the_remote_path_through_nnsight_s_simulation`` runs this file again with
EMERGENCE_LAB_NNSIGHT_SIM=1, where every comparison takes the simulated remote model instead of the local one."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import Cancelled, ModelLoadError, PathNotAllowedError, UserError
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.interventions import patching, traced as traced_ops
from core.interventions.ablation import run_ablated, scan
from core.models.loading import PathPolicy, load_model
from core.models.types import ModelSpec
from core.tasks import load_builtin

pytest.importorskip("nnsight")
from core.models.traced import LOCAL_SIM, Traced, load_traced, parse_traced  # noqa: E402

ARCHS = ("gpt2", "neox", "llama")
SIM = os.environ.get("EMERGENCE_LAB_NNSIGHT_SIM") == "1"
local_only = pytest.mark.skipif(SIM, reason="runs in the main process")
CLEAN, CORRUPT, TARGET = "w1 w2 w3 w4 w1 w2 w3", "w1 w2 w5 w4 w1 w2 w3", " w4"


@pytest.fixture(scope="module")
def pairs(tiny_models):
    """Per architecture: (the plain handle, the same weights as nnsight: — or, with SIM, as a simulated remote
    model)."""
    out = {}
    for arch in ARCHS:
        plain = load_model(ModelSpec(str(tiny_models[arch])))
        local = load_model(ModelSpec(f"nnsight:{tiny_models[arch]}"))
        if SIM:
            local = replace(local, model=load_traced(parse_traced(f"ndif:{arch}"), plain.model, plain.tokenizer,
                                                     simulate=True))
        out[arch] = (plain, local)
    return out


@pytest.fixture(scope="module")
def task():
    return load_builtin("recall")


def test_names_and_handles(pairs, tiny_models):
    plain, local = pairs["llama"]
    assert isinstance(local.model, Traced) and local.traced is local.model and plain.traced is None
    assert local.info.key == f"nnsight:{tiny_models['llama']}" and "nnsight" in local.info.origin
    assert local.info.n_layers == plain.info.n_layers and local.info.n_kv_heads == 2
    assert local.traced.remote == (LOCAL_SIM if SIM else False)
    assert parse_traced("ndif:meta-llama/Llama-3.1-70B").remote and parse_traced("gpt2") is None
    with pytest.raises(ModelLoadError, match="Name the model"):
        parse_traced("ndif: ")


@pytest.mark.parametrize("arch", ARCHS)
def test_few_shot_log_likelihoods_equal_the_project_scorer(pairs, task, arch):
    plain, handle = pairs[arch]
    config = FewShotConfig(k=2, limit=6, seed=1)
    ref, got = run_fewshot(plain, task, config), run_fewshot(handle, task, config)
    a = np.array([e.choice_logprobs for e in ref.examples])
    b = np.array([e.choice_logprobs for e in got.examples])
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    assert [e.prediction for e in ref.examples] == [e.prediction for e in got.examples]
    assert ref.metrics.accuracy == got.metrics.accuracy


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_ablation_through_traces_equals_the_hooks(pairs, task, arch, mode):
    if SIM and mode == "mean" and arch != "llama":
        pytest.skip("the simulated request: mean ablation on one architecture")
    plain, local = pairs[arch]
    config = FewShotConfig(k=2, limit=5, seed=0)
    heads = [(0, 1), (1, 3)]
    for handle in (local,):
        ref = run_ablated(plain, task, config, heads, mode)
        got = run_ablated(handle, task, config, heads, mode)
        a = np.array([e.choice_logprobs for e in ref.examples])
        b = np.array([e.choice_logprobs for e in got.examples])
        assert np.abs(a - b).max() <= 1e-5
        assert handle.traced.edit is None  # the edit ends with the run
    plain_run = run_fewshot(plain, task, config)
    assert not np.allclose([e.choice_logprobs for e in plain_run.examples],
                           [e.choice_logprobs for e in ref.examples])  # the ablation changed something


@local_only
def test_the_ablation_scan_through_traces_equals_the_hooks(pairs, task):
    plain, local = pairs["gpt2"]
    config = FewShotConfig(k=1, limit=3, seed=0)
    a, b = scan(plain, task, config), scan(local, task, config)
    assert np.abs(a.logp - b.logp).max() <= 1e-5 and np.array_equal(a.accuracy, b.accuracy)


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_patching_through_traces_equals_the_hooks(pairs, arch):
    plain, local = pairs[arch]
    ref = patching.patch(plain, CLEAN, CORRUPT, TARGET)
    for handle in (local,):
        got = traced_ops.patch(handle, CLEAN, CORRUPT, TARGET)
        assert abs(got.logprob_clean - ref.logprob_clean) <= 1e-5
        assert abs(got.logprob_corrupt - ref.logprob_corrupt) <= 1e-5
        assert got.residual.shape == ref.residual.shape and np.abs(got.residual - ref.residual).max() <= 1e-4
        assert got.heads.shape == ref.heads.shape and np.abs(got.heads - ref.heads).max() <= 1e-4
        assert got.tokens == ref.tokens
    # the last layer at the last position is the corrupted run made clean: everything restored
    assert ref.residual[-1, -1] == pytest.approx(1.0, abs=1e-4)
    # attribution patching: computed with gradients where the weights are here, left out for a remote model
    if SIM:
        assert got.residual_atp is None
    else:
        assert np.abs(got.residual_atp - ref.residual_atp).max() <= 1e-4


@local_only
def test_patching_through_traces_is_cancelled_between_round_trips(pairs):
    calls = []
    with pytest.raises(Cancelled):
        traced_ops.patch(pairs["gpt2"][1], CLEAN, CORRUPT, TARGET, should_stop=lambda: calls.append(1) or True)
    assert calls == [1]
    with pytest.raises(UserError, match="same length"):
        traced_ops.patch(pairs["gpt2"][1], CLEAN, "w1 w2 w3", TARGET)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_logit_lens_through_traces_equals_the_hooks(pairs, arch):
    plain, local = pairs[arch]
    ref = patching.logit_lens(plain, CLEAN, TARGET, k=3)
    for handle in (local,):
        got = traced_ops.logit_lens(handle, CLEAN, TARGET, k=3)
        assert got.tokens == ref.tokens
        assert np.abs(got.target_prob - ref.target_prob).max() <= 1e-5
        assert np.abs(got.final - ref.final).max() <= 1e-5
        assert [[t for t, _ in pos] for pos in got.top_tokens[0]] == [[t for t, _ in pos] for pos in ref.top_tokens[0]]


@local_only
def test_the_interventions_lab_dispatches_on_how_the_model_was_loaded(tiny_models, tmp_path):
    from core.engine import Engine
    from core.interventions.requests import LensRequest, PatchRequest
    from core.models.types import AppConfig
    eng = Engine(AppConfig(model=None, runs_dir=tmp_path / "runs"))
    plain = eng.runtime.load(ModelSpec(str(tiny_models["neox"]))).info.key
    nn = eng.runtime.load(ModelSpec(f"nnsight:{tiny_models['neox']}")).info.key
    a = eng.interventions.patch(PatchRequest(model=plain, clean=CLEAN, corrupt=CORRUPT, target=TARGET))
    b = eng.interventions.patch(PatchRequest(model=nn, clean=CLEAN, corrupt=CORRUPT, target=TARGET))
    assert np.abs(a.heads - b.heads).max() <= 1e-4
    la = eng.interventions.logit_lens(LensRequest(model=plain, text=CLEAN, target=TARGET))
    lb = eng.interventions.logit_lens(LensRequest(model=nn, text=CLEAN, target=TARGET))
    assert np.abs(la.final - lb.final).max() <= 1e-5
    # the labs that need the weights run on them (attention), through the same handle
    assert eng.runtime.local(nn, "Attention").model is eng.runtime.registry.get(nn).traced.module


@local_only
def test_ndif_is_the_operators_decision_on_an_exposed_server(monkeypatch):
    exposed = PathPolicy(allow_any=False)
    with pytest.raises(PathNotAllowedError, match="--ndif-key-env"):
        load_model(ModelSpec("ndif:meta-llama/Llama-3.1-8B"), exposed)
    assert PathPolicy(allow_any=False, ndif_key_env="CLASS_NDIF").ndif_key() == "CLASS_NDIF"
    assert PathPolicy().ndif_key() == "NDIF_API_KEY"
    monkeypatch.delenv("CLASS_NDIF", raising=False)
    with pytest.raises(ModelLoadError, match=r"\$CLASS_NDIF"):
        load_model(ModelSpec("ndif:meta-llama/Llama-3.1-8B"), PathPolicy(allow_any=False, ndif_key_env="CLASS_NDIF"))
    with pytest.raises(ModelLoadError, match="offline"):
        load_model(ModelSpec("ndif:meta-llama/Llama-3.1-8B"), offline=True)
    # a local path behind nnsight: is checked like the path itself
    with pytest.raises(PathNotAllowedError):
        load_model(ModelSpec("nnsight:/etc"), exposed)


@local_only
def test_without_nnsight_the_name_says_how_to_install_it(monkeypatch, tiny_models):
    import core.models.traced as traced_mod
    monkeypatch.setattr(traced_mod, "nnsight_version", lambda: None)
    with pytest.raises(ModelLoadError, match=r"pip install 'nnsight"):
        load_model(ModelSpec(f"nnsight:{tiny_models['gpt2']}"))
    assert load_model(ModelSpec(str(tiny_models["gpt2"]))).traced is None  # everything else loads as before


@local_only
def test_the_app_imports_without_nnsight(tmp_path):
    """A fresh interpreter where importing nnsight fails: the engine builds and a local lab runs."""
    import subprocess
    import sys
    code = ("import builtins; real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.split('.')[0] == 'nnsight': raise ImportError('no nnsight')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "import importlib.metadata as md; v = md.version\n"
            "md.version = lambda n: (_ for _ in ()).throw(md.PackageNotFoundError(n)) if n == 'nnsight' else v(n)\n"
            "from core.engine import Engine; from core.models.types import AppConfig, ModelSpec\n"
            "from core.interventions.requests import LensRequest\n"
            f"eng = Engine(AppConfig(model=None, runs_dir={str(tmp_path)!r}))\n"
            "key = eng.runtime.load(ModelSpec('default')).info.key\n"
            "print(eng.interventions.logit_lens(LensRequest(model=key, text='a b a', target=None)).tokens)\n"
            "try:\n    eng.runtime.load(ModelSpec('nnsight:default'))\n"
            "except Exception as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "pip install" in out.stdout


@pytest.mark.parametrize("arch", ARCHS)
def test_task_and_function_vectors_through_traces_equal_the_hooks(pairs, arch):
    from core.mechanism.run import function_vector, task_vector
    from test_mechanism import successor_task
    plain, local = pairs[arch]
    if SIM and arch != "llama":
        pytest.skip("the simulated request: one architecture")
    task = successor_task()
    tv_ref = task_vector(plain, task, k=3, limit=6, n_dummy=4)
    fv_ref = function_vector(plain, task, k=3, limit=6, n_examples=1)
    for handle in (local,):
        tv = task_vector(handle, task, k=3, limit=6, n_dummy=4)
        assert tv.accuracy == tv_ref.accuracy and np.allclose(tv.p_gold, tv_ref.p_gold, atol=1e-5)
        fv = function_vector(handle, task, k=3, limit=6, n_examples=1)
        assert np.abs(fv.cie - fv_ref.cie).max() <= 1e-5 and fv.top_heads == fv_ref.top_heads
        assert fv.by_layer == fv_ref.by_layer and abs(fv.norm - fv_ref.norm) <= 1e-4
        assert fv.examples == fv_ref.examples  # greedy continuations with and without the vector


def test_a_remote_model_says_plainly_what_needs_the_weights(tiny_models, tmp_path):
    """An NDIF model (stood in for by a traced model whose weights are marked remote): attention and gradients are
    refused with a message naming what does work; the interventions run through its traces."""
    from core.attention.requests import AttentionRequest
    from core.engine import Engine
    from core.interventions.requests import LensRequest
    from core.models.types import AppConfig
    eng = Engine(AppConfig(model=None, runs_dir=tmp_path / "runs"))
    key = eng.runtime.load(ModelSpec(f"nnsight:{tiny_models['gpt2']}")).info.key
    handle = eng.runtime.registry.get(key)
    handle.info = replace(handle.info, source="ndif")
    handle.model.remote, handle.model.has_weights = (LOCAL_SIM if SIM else False), False  # as NDIF: no weights
    with pytest.raises(UserError, match="runs on NDIF.*logit lens"):
        eng.attention.run(AttentionRequest(model=key, text=CLEAN))
    assert eng.interventions.logit_lens(LensRequest(model=key, text=CLEAN, target=TARGET)).tokens


@local_only
def test_the_remote_path_through_nnsight_s_simulation():
    """This file again in a fresh interpreter, every comparison against the simulated remote model."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, EMERGENCE_LAB_NNSIGHT_SIM="1"))
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
