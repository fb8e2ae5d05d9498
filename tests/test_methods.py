"""The parameter-efficient family: every method trains, saves, reloads and reproduces its held-out score;
trainable counts are peft's own; the virtual-token forward equals peft's where peft's works; the labs run on
a prefix- or prompt-tuned model."""
import json

import pytest
import torch

from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.finetune.train import train_run
from core.finetune.types import DataSpec, FinetuneSpec
from core.models.loading import load_model
from core.models.types import ModelSpec
from core.tasks import load_builtin

LR = {"full": 1e-3, "lora": 3e-3, "ia3": 3e-2, "prefix": 1e-2, "prompt": 3e-2}
WORDGROUPS = load_builtin("wordgroups")


def _reloaded_accuracy(path: str) -> float:
    """The Few-shot tab's scorer (k = 0) on the reloaded model: a classifier's head, or the label's likelihood."""
    handle = load_model(ModelSpec(model=path))
    return run_fewshot(handle, WORDGROUPS, FewShotConfig(k=0, limit=60)).metrics.accuracy


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prefix", "prompt"])
@pytest.mark.parametrize("objective", ["classification", "causal"])
def test_every_method_trains_saves_reloads_and_reproduces_its_accuracy(tmp_path, method, objective):
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups", max_eval=60), objective=objective,
                        method=method, lr=LR[method], max_steps=8, batch_size=32, eval_every=4)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["method"] == method and metrics["steps"] == 8
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert (metrics["trainable_params"] == metrics["total_params"]) == (method == "full")
    assert metrics["peak_memory_bytes"] > 0 and metrics["peak_memory_kind"]
    saved = metrics["model_path"]
    assert saved.endswith("adapter" if method in ("prefix", "prompt") else "model")
    assert _reloaded_accuracy(saved) == metrics["eval_accuracy"]  # exactly: the same scorer, the same rows


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix", "prompt"])
def test_trainable_counts_are_the_ones_peft_reports(method):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification
    from core.finetune import methods
    from core.models.embedded import find_embedded

    path = find_embedded("default").checkpoint(None).path
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), method=method, virtual_tokens=12)
    ours = methods.wrap(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), spec, causal=True)
    cfg = {"lora": LoraConfig(r=8, lora_alpha=16, target_modules=["query_key_value", "dense"],
                              task_type=TaskType.SEQ_CLS),
           "ia3": IA3Config(task_type=TaskType.SEQ_CLS),
           "prefix": PrefixTuningConfig(num_virtual_tokens=12, task_type=TaskType.SEQ_CLS),
           "prompt": PromptTuningConfig(num_virtual_tokens=12, task_type=TaskType.SEQ_CLS)}[method]
    theirs = get_peft_model(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), cfg)
    assert methods.parameter_counts(ours) == theirs.get_nb_trainable_parameters()
    n_grad = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert n_grad == theirs.get_nb_trainable_parameters()[0]  # what the optimizer gets is what peft counts


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_the_virtual_token_forward_is_pefts_where_pefts_works(method):
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM
    from core.models.embedded import find_embedded
    from core.models.virtual import VirtualTokens

    torch.manual_seed(0)
    path = find_embedded("default").checkpoint(None).path
    cfg = (PrefixTuningConfig if method == "prefix" else PromptTuningConfig)(num_virtual_tokens=5,
                                                                            task_type=TaskType.CAUSAL_LM)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), cfg)
    with torch.no_grad():  # learned values, not the initial ones
        for p in peft_model.prompt_encoder.parameters():
            p.add_(torch.randn_like(p))
    peft_model.eval()
    ids = torch.randint(5, 60, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits  # (2, [5 +] 9, V)
        ours = VirtualTokens(peft_model, causal=True).eval()(input_ids=ids, attention_mask=mask).logits
    assert ours.shape == (2, 9, theirs.shape[-1])
    assert torch.allclose(ours, theirs[:, -9:], atol=1e-5)
    # a second call through our cache (the scorer's shared prefix) gives the same next-token logits
    with torch.no_grad():
        wrapped = VirtualTokens(peft_model, causal=True).eval()
        first = wrapped(input_ids=ids[:, :5], use_cache=True)
        rest = wrapped(input_ids=ids[:, 5:], cache=first.cache).logits
    assert torch.allclose(rest, ours[:, 5:], atol=1e-5)


def test_every_lab_runs_on_a_prefix_tuned_model(tmp_path):
    from core.attention.capture import compute_attention, head_scores
    from core.attribution.attribute import attribute
    from core.interventions.ablation import run_ablated
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups", max_eval=40), objective="causal",
                        method="prefix", lr=1e-2, max_steps=4, batch_size=32, virtual_tokens=6)
    metrics = train_run(spec, tmp_path / "run")
    handle = load_model(ModelSpec(model=metrics["model_path"]))
    info = handle.info
    assert "6 virtual tokens (prefix tuning)" in info.architecture and "virtual tokens" in info.origin
    assert info.context_length == 64 - 6  # the virtual tokens take the first positions
    att = compute_attention(handle, "w5 w9 w2 w5 w9 w2", [1])
    n = len(handle.tokenizer("w5 w9 w2 w5 w9 w2")["input_ids"])
    assert att.layers[1].shape == (info.n_heads, n, n)  # the input's tokens (the virtual keys are cut)
    assert head_scores(handle, seq_len=12).induction.shape == (info.n_layers, info.n_heads)
    res = attribute(handle, "w3 = w17 ; w3 =", " w17", "ig")
    assert res.convergence["converged"]
    plain = run_fewshot(handle, WORDGROUPS, FewShotConfig(k=0, limit=40))
    assert plain.metrics.accuracy == metrics["eval_accuracy"]
    ablated = run_ablated(handle, WORDGROUPS, FewShotConfig(k=0, limit=40), [(1, 3)], "zero")
    assert ablated.metrics.mean_gold_logprob != plain.metrics.mean_gold_logprob


def test_a_cancelled_prompt_tuning_run_resumes_to_the_same_end(tmp_path):
    from core.finetune.runs import read_status
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups", max_eval=40), method="prompt",
                        lr=3e-2, max_steps=10, batch_size=32, eval_every=5, seed=3)
    whole = train_run(spec, tmp_path / "whole")
    seen = {"n": 0}

    def stop_after_six():
        seen["n"] += 1
        return seen["n"] > 6
    assert train_run(spec, tmp_path / "cut", should_stop=stop_after_six) == {}
    assert read_status(tmp_path / "cut").state == "cancelled"
    resumed = train_run(None, tmp_path / "cut", resume=True)
    assert resumed["steps"] == 10
    assert resumed["train_loss"][-1] == pytest.approx(whole["train_loss"][-1], abs=1e-4)
    assert resumed["eval_accuracy"] == whole["eval_accuracy"]


def test_unknown_methods_and_bad_sizes_are_refused():
    from core.errors import UserError
    with pytest.raises(UserError, match="Unknown method 'adapter'"):
        FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), method="adapter").check()
    with pytest.raises(UserError, match="at least 1"):
        FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), train_size=0).check()
    with pytest.raises(UserError, match="virtual tokens must be more than 0"):
        FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), virtual_tokens=0).check()


def test_a_training_sample_keeps_every_label(tmp_path):
    from core.finetune.data import load_task
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), train_size=8, seed=1)
    task = load_task(spec)
    golds = [task.gold(r) for r in task.rows("train")]
    assert len(golds) == 8 and sorted(set(golds)) == sorted(task.choices) and golds.count(golds[0]) == 4
    assert load_task(spec).train.equals(task.train)  # seeded: the same sample every time
    assert not load_task(FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), train_size=8,
                                      seed=2)).train.equals(task.train)
    json.dumps(spec.to_dict())  # the spec (with its sample size) is what a run folder records


def test_a_prompt_tuned_run_is_compared_with_the_base_and_few_shot(tmp_path):
    from core.engine import Engine
    from core.finetune.requests import CompareRequest
    from core.models.types import AppConfig
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups", max_eval=30), objective="causal",
                        method="prompt", lr=3e-2, max_steps=4, batch_size=32)
    metrics = train_run(spec, tmp_path / "prompt-run")
    runs = engine.finetune.compare(CompareRequest(run="prompt-run", k=2, limit=30))
    assert [r.config.name for r in runs] == ["A: base, k=0", "B: base, k=2", "C: fine-tuned, k=0"]
    assert runs[2].metrics.accuracy == metrics["eval_accuracy"]
    assert any(value == metrics["model_path"] for _, value in engine.catalogue.model_choices())  # listed for every tab
