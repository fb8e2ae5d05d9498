"""The attention engine: exact weights, layer-by-layer capture, head roles, rollout, errors."""
import gc
import warnings

import numpy as np
import pytest
import torch

from core.attention.capture import attention_modules, compute_attention, head_scores, rollout
from core.errors import UserError
from core.models.loading import load_model
from core.models.types import ModelSpec

TEXT = "the good movie is w3 w4 w5 the good movie was bad"


def _reference(path, cls, text, pair=None):
    """``model(..., output_attentions=True)`` under eager attention, loaded independently."""
    from transformers import AutoTokenizer
    model = cls.from_pretrained(path, attn_implementation="eager")
    enc = AutoTokenizer.from_pretrained(path)(text, pair, return_tensors="pt")
    with torch.no_grad():
        return [a[0].numpy() for a in model(**enc, output_attentions=True).attentions]


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama", "bert", "bert_cls"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_equals_output_attentions_under_eager(tiny_models, name, impl):
    handle = load_model(ModelSpec(str(tiny_models[name]), attn_implementation=impl))
    pair = "w1 w2 good" if name.startswith("bert") else None
    res = compute_attention(handle, TEXT, text_pair=pair)
    ref = _reference(tiny_models[name], type(handle.model), TEXT, pair)
    assert sorted(res.layers) == list(range(len(ref)))
    for i, r in enumerate(ref):
        assert res.layers[i].shape == r.shape  # (heads, q, k)
        np.testing.assert_allclose(res.layers[i], r, atol=1e-5)
    assert handle.attn_implementation == impl  # switched back after
    if pair:
        assert res.segment_ids[-1] == 1 and res.segment_ids[0] == 0
    if res.causal:
        assert np.allclose(np.triu(res.layers[0][0], 1), 0)
    np.testing.assert_allclose(res.layers[0].sum(-1), 1, atol=1e-5)


def test_gqa_model_returns_every_query_head(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["llama"])))
    assert handle.info.n_kv_heads == 2
    res = compute_attention(handle, TEXT, layers=[2], heads=[1, 3])
    assert res.layers[2].shape[0] == 2 and res.heads == (1, 3)
    full = compute_attention(handle, TEXT, layers=[2])
    np.testing.assert_allclose(res.head(2, 3), full.head(2, 3))


def test_one_layer_requested_keeps_one_layer(tmp_path):
    """At the moment the requested layer runs, only its attention is alive; later layers never run.

    The same probe on ``output_attentions=True`` sees every earlier layer alive, so this check can fail.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    from tiny import word_tokenizer

    n_layers, T = 12, 61  # a distinctive length to find the tensors by shape
    cfg = LlamaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=64, max_position_embeddings=128)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    word_tokenizer(bos=True).save_pretrained(tmp_path)
    handle = load_model(ModelSpec(str(tmp_path)))
    text = " ".join(f"w{i % 30}" for i in range(T - 1))  # + BOS = T tokens
    mods = [m for m, _ in attention_modules(handle.model)]
    assert len(mods) == n_layers
    seen = {"ran": [], "alive": []}

    def live_attention_tensors() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance on some torch globals warns
            return sum(1 for o in gc.get_objects()
                       if isinstance(o, torch.Tensor) and o.dim() >= 3 and tuple(o.shape[-2:]) == (T, T)
                       and o.shape[-3] == 4)

    def probe(i):
        def hook(_m, _a, out):
            seen["ran"].append(i)
            if i == 7:
                seen["alive"].append(live_attention_tensors())
        return hook

    hooks = [m.register_forward_hook(probe(i)) for i, m in enumerate(mods)]
    try:
        res = compute_attention(handle, text, layers=[7])
        ours_alive = seen["alive"][-1]
        assert list(res.layers) == [7] and seen["ran"] == list(range(8))  # stopped after layer 7
        seen["ran"].clear()
        with torch.no_grad():
            handle.model.set_attn_implementation("eager")
            handle.model(**handle.tokenizer(text, return_tensors="pt"), output_attentions=True)
        naive_alive = seen["alive"][-1]
    finally:
        for h in hooks:
            h.remove()
    assert ours_alive <= 2, ours_alive      # this layer's weights (+ the kept copy)
    assert naive_alive >= 8, naive_alive    # the naive path holds every layer so far


def test_window_and_display_tokens(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["neox"])))
    full = compute_attention(handle, TEXT, layers=[0])
    part = compute_attention(handle, TEXT, layers=[0], window=(3, 8))
    assert part.window == (3, 8) and part.truncated and not full.truncated
    np.testing.assert_allclose(part.layers[0], full.layers[0][:, 3:8, 3:8])
    assert part.display == full.display[3:8] and full.display[0] == "<bos>"
    from ui.attention_plots import layer_grid
    fig = layer_grid(part, 0)  # every head of the layer: its tokens on the outer axes, positions of the window
    labelled_y = [k for k, v in fig.layout.to_plotly_json().items() if k.startswith("yaxis") and v.get("showticklabels")]
    labelled_x = [k for k, v in fig.layout.to_plotly_json().items() if k.startswith("xaxis") and v.get("showticklabels")]
    rows, cols = -(-len(part.heads) // min(4, len(part.heads))), min(4, len(part.heads))
    assert len(labelled_y) == rows and len(labelled_x) == cols
    assert list(fig.data[0].y) == [f"{3 + i}:{t}" for i, t in enumerate(part.display)]


def test_bad_input_messages(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["gpt2"])))
    with pytest.raises(UserError, match="empty"):
        compute_attention(handle, "   ")
    with pytest.raises(UserError, match="Layer 5 is out of range.*0 to 1"):
        compute_attention(handle, TEXT, layers=[5])
    with pytest.raises(UserError, match="Head 9 is out of range"):
        compute_attention(handle, TEXT, heads=[9])
    with pytest.raises(UserError, match="reads at most 64"):
        compute_attention(handle, " ".join(["w1"] * 100))
    with pytest.raises(UserError, match="holds no tokens"):
        compute_attention(handle, TEXT, window=(50, 60))


def test_head_scores_shapes_and_determinism(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["llama"])))
    a = head_scores(handle, seq_len=12, seed=3)
    b = head_scores(handle, seq_len=12, seed=3)
    assert a.induction.shape == (3, 4) and np.array_equal(a.induction, b.induction)
    for role in ("induction", "previous_token", "sink"):
        assert ((a.get(role) >= 0) & (a.get(role) <= 1)).all()
    assert (a.entropy > 0).all()
    d = a.to_dict()
    assert d["n_layers"] == 3 and len(d["scores"]["induction"][0]) == 4
    with pytest.raises(UserError, match="Probe length"):
        head_scores(handle, seq_len=40)  # two copies do not fit in 64 tokens


def test_head_roles_find_planted_heads():
    """Hand-made attention: the scores pick out exactly the head built for each role."""
    from core.attention import head_roles
    T, L = 21, 10  # BOS + a 10-token segment twice
    att = torch.zeros(3, T, T)
    for q in range(T):
        att[0, q, max(q - 1, 0)] = 1            # previous-token head
        att[2, q, 0] = 1                        # sink head
        att[1, q, q - L + 1 if q >= 1 + L else 0] = 1  # induction head on the second copy
    ind = head_roles.induction_score(att, 1, L)
    assert ind.argmax() == 1 and ind[1] == 1
    assert head_roles.previous_token_score(att).argmax() == 0
    assert head_roles.sink_score(att).argmax() == 2


def test_rollout_rows_are_distributions(tiny_models):
    handle = load_model(ModelSpec(str(tiny_models["bert"])))
    R, tokens = rollout(handle, TEXT, "w1 w2")
    assert R.shape == (len(tokens), len(tokens))
    np.testing.assert_allclose(R.sum(-1), 1, atol=1e-5)


def test_default_model_has_the_induction_head_its_card_names():
    """The model card lists the induction heads; the head-role grid must mark the same ones."""
    import re

    from core.models.embedded import MODELS_DIR
    card = (MODELS_DIR / "README.md").read_text()
    section = card.split("## el-2l-128")[1].split("\n## ")[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("- Induction heads"))
    named = {(int(a), int(b)) for a, b in re.findall(r"L(\d+)\.H(\d+)", line)}
    assert named, "the card names at least one induction head"
    scores = head_scores(load_model(ModelSpec("default")), seed=0)  # the grid's own default probe
    marked = {(li, hi) for li, hi, s in scores.top("induction", 8) if s >= 0.5}
    assert named == marked


def test_english_on_a_toy_vocabulary_is_said_not_shown_silently(tmp_path):
    """(issue 29: English typed into the embedded model became all <unk> with no word of warning)"""
    from core.attribution.requests import AttributionRequest
    from core.engine import Engine
    from core.models.types import AppConfig
    from ui.attention_plots import notice
    from ui.attribution_plots import summary
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    key = engine.models.load(engine.models.spec("default")).key
    h = engine.runtime.registry.get(key)
    english = compute_attention(h, "The cat sat on the mat.", [0], [0])
    assert english.note.startswith("6 of 6 tokens are unknown to el-2l-128") and "⚠" in notice(english, 256)
    assert compute_attention(h, "w1 w2 w3 w1 w2 w3", [0], [0]).note == ""  # its own words: nothing to say
    res = engine.attribution.run(AttributionRequest(model=key, prompt="The cat sat on the", target=" w17",
                                              method="ablation", granularity="word"))
    assert "unknown to el-2l-128" in res.note and summary(res).startswith("⚠")
    ok = engine.attribution.run(AttributionRequest(model=key, prompt="w3 = w17 ; w3 =", target=" w17",
                                             method="ablation", granularity="word"))
    assert ok.note == "" and not summary(ok).startswith("⚠")
