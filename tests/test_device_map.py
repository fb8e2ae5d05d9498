"""Models split across devices by accelerate's device maps. On this CPU-only machine the split is forced with a
small CPU budget and disk offload: accelerate's hooks then move each layer's weights in as it runs, the same code
path as across GPUs. Every result equals the one-device result."""
import json

import numpy as np
import pytest
import torch

from core.engine import Engine
from core.models.types import AppConfig

ARCHS = ["gpt2", "neox", "llama"]


def _half(path) -> str:
    """A CPU budget that holds about half the model: the rest goes to disk."""
    from safetensors import safe_open
    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            total += t.numel() * t.element_size()
    return f"cpu={total // 2}"


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    plain = Engine(AppConfig(model=None, runs_dir=tmp_path_factory.mktemp("plain"), offline=True, max_models=8))
    split = Engine(AppConfig(model=None, runs_dir=tmp_path_factory.mktemp("split"), offline=True, max_models=8))
    return plain, split


def _pair(engines, tiny_models, arch, tmp_path_factory):
    from core.models.requests import LoadRequest
    plain, split = engines
    path = tiny_models[arch]
    a = plain.models.load(LoadRequest(model=str(path))).key
    b = split.models.load(LoadRequest(model=str(path), device_map="auto", max_memory=_half(path),
                               offload_folder=str(tmp_path_factory.mktemp(f"offload-{arch}")))).key
    return a, b


@pytest.mark.parametrize("arch", ARCHS)
def test_a_split_model_gives_the_one_device_results(engines, tiny_models, arch, tmp_path_factory):
    from core.attention.requests import AttentionRequest, HeadRolesRequest
    from core.attribution.requests import AttributionRequest
    from core.fewshot.run import run_fewshot
    from core.fewshot.scoring import generate_greedy
    from core.fewshot.types import FewShotConfig
    from core.tasks import load_builtin
    plain, split = engines
    a, b = _pair(engines, tiny_models, arch, tmp_path_factory)
    info = split.models.info(b)
    assert set(info.device_map.values()) == {"cpu", "disk"}, info.device_map  # really split
    assert set(info.memory_by_device) == {"cpu", "disk"} and sum(info.memory_by_device.values()) > 0
    assert split.models.memory()["models_bytes_by_device"]["disk"] > 0

    text = "w5 w9 w2 w5 w9 w2 good movie"
    for layer in range(plain.models.info(a).n_layers):  # attention exactly
        ra = plain.attention.run(AttentionRequest(model=a, text=text, layer=layer))
        rb = split.attention.run(AttentionRequest(model=b, text=text, layer=layer))
        assert np.array_equal(ra.layers[layer], rb.layers[layer])
    ha, hb = plain.attention.head_scores(HeadRolesRequest(model=a, seq_len=10)), split.attention.head_scores(HeadRolesRequest(model=b, seq_len=10))
    assert np.array_equal(ha.induction, hb.induction) and np.array_equal(ha.sink, hb.sink)
    from core.attention.requests import RolloutRequest
    assert np.array_equal(plain.attention.rollout(RolloutRequest(model=a, text=text))[0],
                          split.attention.rollout(RolloutRequest(model=b, text=text))[0])

    task = load_builtin("sentiment")  # few-shot scoring with the shared-prefix cache
    ca = run_fewshot(plain.runtime.registry.get(a), task, FewShotConfig(k=4, limit=12))
    cb = run_fewshot(split.runtime.registry.get(b), task, FewShotConfig(k=4, limit=12))
    assert cb.examples[0].choice_logprobs and cb.metrics.accuracy == ca.metrics.accuracy
    for ea, eb in zip(ca.examples, cb.examples):
        assert np.allclose(ea.choice_logprobs, eb.choice_logprobs, atol=1e-5)
    ga = generate_greedy(plain.runtime.registry.get(a).model, plain.runtime.registry.get(a).tokenizer, ["w1 w2 w3"], 4)
    gb = generate_greedy(split.runtime.registry.get(b).model, split.runtime.registry.get(b).tokenizer, ["w1 w2 w3"], 4)
    assert ga == gb

    for method in ("ig", "ablation", "saliency"):  # attributions: gradients flow back through the hooks
        req = dict(prompt="w3 = w17 ; w3 =", target=" w17", method=method, granularity="word")
        xa = plain.attribution.run(AttributionRequest.from_mapping({**req, "model": a}))
        xb = split.attribution.run(AttributionRequest.from_mapping({**req, "model": b}))
        assert np.allclose(xa.scores, xb.scores, rtol=1e-4, atol=1e-6), method


def test_a_series_sweeps_split_models(tiny_models, tmp_path):
    from core.emergence.requests import SweepSeriesRequest
    names = ",".join(str(tiny_models[a]) for a in ("gpt2", "llama"))
    req = SweepSeriesRequest.from_mapping(dict(source="models", models=names, task="sentiment", k=2, limit=8,
                                               selection="random", seeds=1))
    plain = Engine(AppConfig(model=None, runs_dir=tmp_path / "a", offline=True))
    split = Engine(AppConfig(model=None, runs_dir=tmp_path / "b", offline=True, device_map="auto",
                             max_memory="cpu=20000", offload_folder=str(tmp_path / "off")))
    ra, rb = plain.emergence.sweep(req), split.emergence.sweep(req)
    for pa, pb in zip(ra, rb):
        assert pa.error is None and pb.error is None
        assert pa.metrics["accuracy"] == pb.metrics["accuracy"]
        assert pa.metrics["gold_logprob"] == pytest.approx(pb.metrics["gold_logprob"], abs=1e-5)


def test_lora_trains_on_a_split_model_as_on_one_device(tiny_models, tmp_path):
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    common = dict(model=str(tiny_models["llama"]), data=DataSpec(task="sentiment", max_eval=12), objective="causal",
                  method="lora", lr=1e-2, max_steps=3, batch_size=8, eval_every=3)
    one = train_run(FinetuneSpec(**common), tmp_path / "one")
    two = train_run(FinetuneSpec(**common, device_map="auto", max_memory=_half(tiny_models["llama"])),
                    tmp_path / "two")
    assert np.allclose(one["train_loss"], two["train_loss"], atol=1e-5)
    assert one["eval_accuracy"] == two["eval_accuracy"]
    from core.fewshot.run import run_fewshot  # the merged model saved from the split run is the same model
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import load_builtin
    rows = [run_fewshot(load_model(ModelSpec(m["model_path"])), load_builtin("sentiment"),
                        FewShotConfig(k=0, limit=12)) for m in (one, two)]
    assert np.allclose([e.choice_logprobs for e in rows[0].examples], [e.choice_logprobs for e in rows[1].examples],
                       atol=1e-5)


def test_the_cli_splits_a_model_and_prints_the_same_attention(tiny_models, tmp_path, capsys):
    from core.cli import main
    path = str(tiny_models["neox"])
    main(["attention", "--model", path, "--text", "w1 w2 w1 w2", "--layer", "1", "--head", "2"])
    one = json.loads(capsys.readouterr().out)
    main(["attention", "--model", path, "--text", "w1 w2 w1 w2", "--layer", "1", "--head", "2", "--device-map",
          "auto", "--max-memory", _half(tiny_models["neox"]), "--offload-folder", str(tmp_path)])
    assert json.loads(capsys.readouterr().out) == one
    main(["fewshot", "--model", path, "--task", "sentiment", "--k", "2", "--limit", "6", "--device-map", "auto",
          "--max-memory", _half(tiny_models["neox"])])
    assert json.loads(capsys.readouterr().out)["examples"]


def test_a_device_map_is_planned_for_several_gpus_without_weights():
    from transformers import LlamaConfig
    from core.models.devices import plan_device_map
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000)  # Llama-2-7B's shape
    plan = plan_device_map(cfg, {0: "5GiB", 1: "5GiB", "cpu": "64GiB"}, dtype=torch.bfloat16)
    where = [plan[f"model.layers.{i}"] for i in range(32)]
    assert plan["model.embed_tokens"] == 0 and where[0] == 0
    assert 0 in where and 1 in where and "cpu" in where  # 13.5 GB of weights: two 5 GiB GPUs, the rest on the CPU
    assert where == sorted(where, key=lambda d: (isinstance(d, str), d))  # layers in order: GPU 0, GPU 1, CPU
    everything = plan_device_map(cfg, {0: "80GiB", "cpu": "64GiB"}, dtype=torch.bfloat16)
    assert set(everything.values()) == {0}


def test_bad_split_settings_are_refused(tiny_models):
    from core.errors import UserError
    from core.models.requests import LoadRequest
    with pytest.raises(UserError, match="'device=amount"):
        LoadRequest(model="default", device_map="auto", max_memory="lots").check()
    with pytest.raises(UserError, match="go with a device map"):
        LoadRequest(model="default", max_memory="cpu=1GB").check()
    with pytest.raises(UserError, match="Device map 'everywhere'"):
        LoadRequest(model="default", device_map="everywhere").check()


def test_the_model_tab_loads_a_split_model_and_shows_where_its_layers_are(client, tiny_models):
    path = str(tiny_models["llama"])
    card, info, table, memory, _ = client.predict(path, "", "auto", "auto", "auto", False, "auto",
                                                  _half(tiny_models["llama"]), "", api_name="/load_model")
    assert info["device_map"] and set(info["memory_by_device"]) == {"cpu", "disk"}
    assert "Split" in card and "disk" in card and "Weights by device" in memory
    client.predict(api_name="/unload_model")
