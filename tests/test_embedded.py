"""The shipped models: loadable folders, small, and the abilities the model card claims.

Scores are measured on repeated segments longer than any repeated segment in training (see
core/synthetic.py), so a model that learned "copy from a fixed distance back" would fail here.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.models.embedded import DEFAULT_MODEL, MODELS_DIR, find_embedded, list_embedded
from core.attention.probes import probe_scores, recall_accuracy
from core.build.synthetic import MAX_TRAIN_DISTANCE, recall_items

HELD_OUT = [(24, 8), (28, 4), (30, 2)]  # (segment length, offset of the first copy)
assert all(s > MAX_TRAIN_DISTANCE for s, _ in HELD_OUT)  # longer than any repeat block in training


def _load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(path)


def top_induction(model) -> float:
    return max(probe_scores(model, n=16, seg_len=s, offset=o, seed=11).top_induction for s, o in HELD_OUT)


def test_catalogue_two_sizes_six_checkpoints_under_30mb():
    models = list_embedded()
    assert len(models) >= 2 and models[0].name == DEFAULT_MODEL and models[0].default
    sizes = {sum(p.numel() for p in _load(m.path)[0].parameters()) for m in models}
    assert len(sizes) >= 2, "at least two model sizes"
    for m in models:
        assert len(m.checkpoints) >= 6
        assert m.checkpoints[0].step == 0
    total = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file())
    assert total < 30 * 2**20, f"{total / 2**20:.1f} MB"


def test_every_checkpoint_is_a_plain_transformers_folder():
    for m in list_embedded():
        for ck in m.checkpoints:
            assert (ck.path / "model.safetensors").exists() and not list(ck.path.glob("*.bin"))
            model = AutoModelForCausalLM.from_pretrained(ck.path)  # no extra arguments
            assert model.config.model_type == "gpt_neox"


@pytest.fixture(scope="module")
def default_first_and_last():
    m = find_embedded("default")
    return _load(m.checkpoints[0].path), _load(m.checkpoints[-1].path)


def test_induction_head_forms_during_training(default_first_and_last):
    (first, _), (last, _) = default_first_and_last
    assert top_induction(first) < 0.2
    assert top_induction(last) >= 0.5


def test_key_value_recall_learned(default_first_and_last):
    (first, tok0), (last, tok1) = default_first_and_last
    items = recall_items(200, n_pairs=8, seed=31337)
    start, end = recall_accuracy(first, tok0, items), recall_accuracy(last, tok1, items)
    assert end.accuracy >= 0.9
    assert abs(start.accuracy - start.chance) < 0.1  # near chance (1/8)


def test_revision_picks_checkpoints():
    m = find_embedded("default")
    assert m.checkpoint("step0").step == 0
    assert m.checkpoint(None).step == m.checkpoints[-1].step
    assert m.checkpoint(f"step-{m.checkpoints[1].step:05d}").step == m.checkpoints[1].step
    with pytest.raises(KeyError, match="no checkpoint"):
        m.checkpoint("step7")
