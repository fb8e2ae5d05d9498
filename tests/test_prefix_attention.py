"""The scorer's shared-prefix attention: the same log-likelihoods as the cache path, taken where it
applies, left where it does not, and the model switched back whatever happens."""
import threading

import numpy as np
import pytest
import torch

from core.fewshot import prefix_attention
from core.fewshot.scoring import score_continuations
from core.models.loading import load_model
from core.models.types import ModelSpec

PREFIX = "w1 = w2 ; w3 = w4 ; w5 = w6 ; w7 = w8 ; w9 = w10 ; "
CONTEXTS = [PREFIX + q for q in ["w1 =", "w3 = w4 ; w5 =", "w11 w12 w13 w14 w15 =", "w9 ="]]
CHOICES = [[" w2", " w4 w6"], [" w6", " w2"], [" w8 w9 w10", " w1"], [" w10", " w10 w10"]]


def _scores(handle, shared: bool, monkeypatch, batch_tokens=8192):
    with monkeypatch.context() as m:
        if not shared:
            m.setattr(prefix_attention, "usable", lambda model: False)
        return score_continuations(handle.model, handle.tokenizer, CONTEXTS, CHOICES, batch_tokens=batch_tokens)


def _count_shared(monkeypatch) -> list[int]:
    calls = []
    real = prefix_attention._shared_prefix_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(prefix_attention, "_shared_prefix_attention", spy)
    return calls


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama"])  # llama: grouped key/value heads (4 q, 2 kv)
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_shared_prefix_equals_the_cache_path(tiny_models, name, impl, monkeypatch):
    handle = load_model(ModelSpec(str(tiny_models[name]), device="cpu", dtype="float32", attn_implementation=impl))
    reference = _scores(handle, False, monkeypatch, batch_tokens=60)
    calls = _count_shared(monkeypatch)
    shared = _scores(handle, True, monkeypatch, batch_tokens=60)  # several batches of different widths
    assert reference.shared_prefix == shared.shared_prefix > 10
    n_layers = handle.model.config.num_hidden_layers
    assert len(calls) >= 2 * n_layers  # every layer of every batch went through it
    np.testing.assert_allclose(shared.logprob, reference.logprob, atol=1e-5)
    assert (shared.greedy == reference.greedy).all()
    assert handle.model.config._attn_implementation == impl  # switched back


def test_a_sliding_window_the_prompt_outgrows_falls_back_to_the_cache(tmp_path, monkeypatch):
    from transformers import MistralConfig, MistralForCausalLM
    from tiny import WORDS, word_tokenizer
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(WORDS) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        sliding_window=8, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    MistralForCausalLM(cfg).save_pretrained(tmp_path)
    word_tokenizer(bos=True).save_pretrained(tmp_path)
    handle = load_model(ModelSpec(str(tmp_path), device="cpu", dtype="float32"))
    reference = _scores(handle, False, monkeypatch)
    shared = _scores(handle, True, monkeypatch)
    np.testing.assert_allclose(shared.logprob, reference.logprob, atol=1e-5)
    # and the windowed reference is really windowed: the full-attention answer differs
    with torch.no_grad():
        ids = torch.tensor([handle.tokenizer(CONTEXTS[1])["input_ids"]])
        windowed = handle.model(ids).logits[0, -1]
        handle.model.config.sliding_window = None
        full = handle.model(ids).logits[0, -1]
    assert not torch.allclose(windowed, full, atol=1e-4)


def test_switched_back_after_an_error_and_other_threads_get_their_own_attention(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["llama"]), device="cpu", dtype="float32"))
    model = handle.model
    ids = torch.tensor([[2, 5, 6, 7, 8, 0, 0], [2, 9, 10, 11, 12, 13, 14]])
    mask = (ids != 0) | (torch.arange(7) == 0)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask.long()).logits
        cache = model(torch.tensor([[2, 5, 6]]), use_cache=True).cache
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with prefix_attention.shared_prefix(model, cache):
            assert model.config._attn_implementation != "sdpa"

            def other():  # a padded batch in another thread while this one is switched
                with torch.no_grad():
                    seen["logits"] = model(ids, attention_mask=mask.long()).logits
            t = threading.Thread(target=other)
            t.start()
            t.join(timeout=120)
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(seen["logits"], expected)


def test_not_used_for_virtual_token_or_split_models():
    class Virtual:
        n_virtual = 4
        config = type("C", (), {"_attn_implementation": "sdpa"})()

        def set_attn_implementation(self, impl):
            pass
    assert not prefix_attention.usable(Virtual())
    split = Virtual()
    split.n_virtual, split.hf_device_map = 0, {"model.layers.0": "cpu", "model.layers.1": "disk"}
    assert not prefix_attention.usable(split)
    split.hf_device_map = None
    assert prefix_attention.usable(split)


def test_an_attention_capture_waits_for_the_scorers_switch(tiny_models):
    """Switches of one model never overlap: capture's eager could otherwise be restored over the scorer's
    switch (or the other way round) and leave a forward computing with the wrong attention."""
    from core.models.loading import model_attention_implementation
    handle = load_model(ModelSpec(str(tiny_models["gpt2"]), device="cpu", dtype="float32"))
    model = handle.model
    with torch.no_grad():
        cache = model(torch.tensor([[5, 6, 7]]), use_cache=True).cache
    entered, seen = threading.Event(), {}

    def capture():
        with model_attention_implementation(model, "eager"):
            seen["impl"] = model.config._attn_implementation
            entered.set()
    with prefix_attention.shared_prefix(model, cache):
        t = threading.Thread(target=capture)
        t.start()
        assert not entered.wait(timeout=0.5)  # it waits while the scorer's switch holds the model
        assert model.config._attn_implementation == "el_shared_prefix_sdpa"
    assert entered.wait(timeout=120)
    t.join(timeout=120)
    assert seen["impl"] == "eager" and model.config._attn_implementation == "sdpa"
