"""Model loading, kinds, device/dtype choice, the registry and its errors."""
import time

import pytest
import torch

from core.models import devices
from core.errors import ModelLoadError, PathNotAllowedError
from core.models.loading import PathPolicy, attention_implementation, load_model
from core.models.registry import ModelRegistry
from core.models.types import AppConfig, ModelSpec

EXPECTED = {  # name -> (kind, architecture, layers, heads, kv heads)
    "gpt2": ("causal_lm", "GPT2LMHeadModel", 2, 4, 4),
    "neox": ("causal_lm", "GPTNeoXForCausalLM", 2, 4, 4),
    "llama": ("causal_lm", "LlamaForCausalLM", 3, 4, 2),
    "bert": ("masked_lm", "BertForMaskedLM", 2, 4, 4),
    "bert_cls": ("seq_cls", "BertForSequenceClassification", 2, 4, 4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_each_architecture(tiny_models, name):
    h = load_model(ModelSpec(str(tiny_models[name])))
    kind, arch, layers, heads, kv = EXPECTED[name]
    info = h.info
    assert (info.kind, info.architecture, info.n_layers, info.n_heads, info.n_kv_heads) == (kind, arch, layers, heads, kv)
    assert info.n_params == sum(p.numel() for p in h.model.parameters()) > 0
    assert info.hidden_size == 32 and info.context_length == 64 and info.vocab_size > 40
    assert info.device == "cpu" and info.dtype == "float32" and info.source == "local"
    assert info.memory_bytes == info.n_params * 4 + sum(b.numel() * b.element_size() for b in h.model.buffers())
    ids = h.tokenizer("w1 w2 w3", return_tensors="pt")
    with torch.no_grad():
        out = h.model(**ids)
    assert torch.isfinite(out.logits).all()


def test_kind_override(tiny_models):
    h = load_model(ModelSpec(str(tiny_models["bert"]), kind="seq_cls"))
    assert h.info.kind == "seq_cls" and h.info.architecture == "BertForSequenceClassification"


def test_named_dtype_and_unknowns(tiny_models):
    h = load_model(ModelSpec(str(tiny_models["llama"]), dtype="bfloat16"))
    assert h.model.dtype == torch.bfloat16 and h.info.dtype == "bfloat16"
    with pytest.raises(ModelLoadError, match="Unknown dtype"):
        load_model(ModelSpec(str(tiny_models["llama"]), dtype="float8"))
    with pytest.raises(ModelLoadError, match="Unknown model kind"):
        load_model(ModelSpec(str(tiny_models["llama"]), kind="vision"))


def test_device_and_dtype_resolution():
    assert devices.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert devices.resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            devices.resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="Unknown device"):
        devices.resolve_device("tpu9")


def test_quantization_needs_cuda(tiny_models):
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_model(ModelSpec(str(tiny_models["gpt2"]), quantization="8bit"))


def test_attention_implementation_switch(tiny_models):
    h = load_model(ModelSpec(str(tiny_models["llama"]), attn_implementation="sdpa"))
    assert h.attn_implementation == "sdpa"
    ids = h.tokenizer("w1 w2 w3 w4", return_tensors="pt")
    with attention_implementation(h, "eager"):
        assert h.attn_implementation == "eager"
        out = h.model(**ids, output_attentions=True)
        assert out.attentions[0].shape == (1, 4, 5, 5)  # (batch, heads, q, k); BOS + 4 words
    assert h.attn_implementation == "sdpa"


def test_bad_paths_and_ids(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_model(ModelSpec(str(tmp_path)))
    with pytest.raises(ModelLoadError, match="No model given"):
        load_model(ModelSpec("  "))
    with pytest.raises(ModelLoadError, match="neither a local model folder nor a valid Hub id"):
        load_model(ModelSpec("not a model!"))


def test_unknown_hub_id_offline_is_fast_and_clear():
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec("emergence-lab-test/does-not-exist"), offline=True)
    assert time.monotonic() - t0 < 60  # a ceiling against retry loops that hang, not a speed claim
    msg = str(err.value)
    assert "emergence-lab-test/does-not-exist" in msg and "offline" in msg and "folder" in msg


def test_unreachable_hub_is_fast_and_clear(monkeypatch):
    """With the Hub unreachable (a closed local port), the error names the id and the fix."""
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec("emergence-lab-test/unreachable"))
    assert time.monotonic() - t0 < 60  # a ceiling against retry loops that hang, not a speed claim
    assert "emergence-lab-test/unreachable" in str(err.value) and "cannot be reached" in str(err.value)


def test_exposed_server_limits_local_paths(tiny_models, tmp_path):
    policy = PathPolicy(allow_any=False, folders=(tmp_path,))
    with pytest.raises(PathNotAllowedError, match="not allowed"):
        load_model(ModelSpec(str(tiny_models["gpt2"])), policy=policy)
    allowed = PathPolicy(allow_any=False, folders=(tiny_models["gpt2"].parent,))
    assert load_model(ModelSpec(str(tiny_models["gpt2"])), policy=allowed).info.kind == "causal_lm"
    assert load_model(ModelSpec("default"), policy=policy).info.source == "embedded"
    assert AppConfig(host="0.0.0.0").exposed and AppConfig(share=True).exposed
    assert not AppConfig().exposed


def test_registry_reuses_and_evicts_lru(tiny_models):
    reg = ModelRegistry(budget_bytes=2**30, max_models=2)
    a, b, c = (ModelSpec(str(tiny_models[n])) for n in ("gpt2", "neox", "llama"))
    ha = reg.load(a)
    assert reg.load(a) is ha                       # same spec, same handle
    reg.load(b)
    assert reg.keys() == [a.key, b.key]
    reg.get(a.key)                                  # touch a: b is now least recently used
    reg.load(c)
    assert reg.keys() == [a.key, c.key]
    with pytest.raises(ModelLoadError, match="not loaded"):
        reg.get(b.key)
    assert reg.unload(a.key) and not reg.unload(a.key)
    assert reg.keys() == [c.key]


def test_registry_memory_budget(tiny_models):
    one = load_model(ModelSpec(str(tiny_models["gpt2"]))).info.memory_bytes
    reg = ModelRegistry(budget_bytes=int(one * 1.5), max_models=5)
    a, b = ModelSpec(str(tiny_models["gpt2"])), ModelSpec(str(tiny_models["gpt2"]), dtype="float16")
    reg.load(a)
    reg.load(b)          # fp16 copy (half the bytes) fits beside a? 1.5 budget: yes
    assert reg.keys() == [a.key, b.key]
    c = ModelSpec(str(tiny_models["neox"]))
    reg.load(c)          # over budget: the oldest go until it fits
    assert reg.keys()[-1] == c.key and a.key not in reg.keys()
    assert reg.used_bytes() <= reg.budget_bytes or len(reg.keys()) == 1


def test_two_models_side_by_side(tiny_models):
    reg = ModelRegistry(max_models=2)
    h1 = reg.load(ModelSpec(str(tiny_models["gpt2"])))
    h2 = reg.load(ModelSpec(str(tiny_models["llama"])))
    assert {i.architecture for i in reg.infos()} == {"GPT2LMHeadModel", "LlamaForCausalLM"}
    assert h1.model is not h2.model


def test_offline_picker_says_which_hub_presets_need_the_network(tmp_path, monkeypatch):
    """Offline, a Hub preset the cache does not hold is listed as needing the network, after those it holds."""
    import huggingface_hub
    from core.catalogue import Catalogue, ModelsLab
    from core.models.presets import HUB_PRESETS
    from core.runtime import Runtime
    cached = {"distilgpt2"}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(tmp_path / "config.json") if repo in cached else None)
    for offline in (True, False):
        rt = Runtime(AppConfig(model=None, runs_dir=tmp_path / "runs", offline=offline))
        labels = {v: label for label, v in Catalogue(rt, ModelsLab(rt)).model_choices()}
        hub = [labels[p.model] for p in HUB_PRESETS]
        if offline:
            assert labels["distilgpt2"].endswith("(in the Hub cache)")
            assert labels["gpt2"] == "gpt2 — offline: not in the Hub cache, needs the network"
            assert list(labels).index("distilgpt2") < list(labels).index("gpt2")
        else:
            assert not any("network" in h or "cache" in h for h in hub)
