"""Fine-tuning: the CLI acceptance run, reload, kill + resume, cancel, bad input."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.finetune.train import train_run
from core.finetune.runs import last_checkpoint, list_runs, read_status
from core.finetune.jobs import FinetuneJobs
from core.finetune.types import DataSpec, FinetuneSpec
from core.models.loading import load_model
from core.tasks import load_builtin
from core.models.types import ModelSpec

ROOT = Path(__file__).resolve().parent.parent
WORDGROUPS = load_builtin("wordgroups")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def accuracy(model: str, k: int = 0) -> float:
    handle = load_model(ModelSpec(model=model))
    return run_fewshot(handle, WORDGROUPS, FewShotConfig(k=k, selection="random")).metrics.accuracy


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """The acceptance run: LoRA on the embedded default model, from the CLI, on CPU."""
    out = tmp_path_factory.mktemp("runs") / "wordgroups-lora"
    t0 = time.time()
    res = cli("finetune", "--model", "default", "--task", "wordgroups", "--objective", "classification",
              "--method", "lora", "--epochs", "12", "--lr", "3e-3", "--batch-size", "32", "--lora-r", "32",
              "--lora-alpha", "64", "--out", str(out))
    elapsed = time.time() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    return out, elapsed


@pytest.mark.slow
def test_lora_from_the_cli_learns_a_task_the_base_model_cannot(lora_run):
    out, _elapsed = lora_run  # how long it took is a benchmark figure (bench/finetune_speed.py), not a test
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"eval_accuracy", "train_loss", "eval_loss", "steps", "tokens_per_second"}
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["steps"] == 300 and len(metrics["train_loss"]) == 300 and metrics["tokens_per_second"] > 0
    assert metrics["eval_loss"][-1] < metrics["eval_loss"][0]
    # the base model is at chance, with or without demonstrations
    assert accuracy("default") < 0.62 and accuracy("default", k=6) < 0.62
    # the run reloads and reproduces its accuracy: merged model, and adapter merged on load
    assert accuracy(str(out / "model")) == pytest.approx(metrics["eval_accuracy"])
    assert accuracy(str(out / "adapter")) == pytest.approx(metrics["eval_accuracy"])
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not list((out / "adapter").glob("model.safetensors"))  # the adapter alone, small


@pytest.mark.slow
def test_causal_lora_learns_to_write_the_label(tmp_path):
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), objective="causal", method="lora",
                        lr=3e-3, epochs=5, batch_size=32, lora_r=32, lora_alpha=64)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["eval_accuracy"] > 0.7  # from ~0.5
    # the Few-shot tab's scorer gives the same number on the saved model
    assert accuracy(str(tmp_path / "run" / "model")) == pytest.approx(metrics["eval_accuracy"])


def test_a_run_without_a_learning_rate_takes_the_one_for_its_models_size(tmp_path):
    """The Fine-tune tab and python -m core finetune both leave it empty: the embedded 0.4M model stayed at chance
    with LoRA's 5e-4 (the usual value for models of 100M parameters), and learns with the small-model default."""
    from core.finetune.types import DEFAULT_LR, DEFAULT_LR_SMALL, default_lr
    assert default_lr("lora", 462_976) == DEFAULT_LR_SMALL["lora"] == 3e-3
    assert default_lr("lora", 135_000_000) == default_lr("lora") == DEFAULT_LR["lora"]
    assert default_lr("lora", 22_700_000, "token-classification") == 5e-3  # MiniLM tagging: F1 0.96, not 0.71
    events = []
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), objective="classification",
                        method="lora", epochs=1, batch_size=32, max_steps=2)
    train_run(spec, tmp_path / "small", on_event=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["lr"] == 3e-3 and start["lr_default"]
    events.clear()
    train_run(FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), objective="classification",
                           method="lora", lr=1e-4, epochs=1, batch_size=32, max_steps=2), tmp_path / "given",
              on_event=events.append)
    assert next(e for e in events if e["event"] == "start")["lr"] == 1e-4  # what the person gave, always


def test_full_finetuning_writes_a_model_every_tab_can_load(tmp_path, bpe_models):
    spec = FinetuneSpec(model=str(bpe_models["gpt2_bpe"]), data=DataSpec(task="sentiment"), method="full",
                        objective="classification", lr=1e-3, epochs=1, batch_size=8)
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["steps"] == 5 and 0 <= metrics["eval_accuracy"] <= 1
    handle = load_model(ModelSpec(model=str(tmp_path / "run" / "model")))
    assert handle.info.kind == "seq_cls"
    assert handle.model.config.id2label == {0: "positive", 1: "negative"}
    run = run_fewshot(handle, load_builtin("sentiment"), FewShotConfig(k=0))
    assert run.metrics.accuracy == pytest.approx(metrics["eval_accuracy"])
    assert [r.state for r in list_runs(tmp_path)] == ["finished"]


@pytest.mark.slow
def test_killing_training_keeps_the_checkpoint_and_resume_continues(tmp_path):
    jobs = FinetuneJobs(tmp_path, threads=1)
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), lr=3e-3, epochs=40, batch_size=8,
                        eval_every=20)
    name = jobs.submit(spec)
    deadline = time.time() + 120
    while last_checkpoint(tmp_path / name) is None:
        assert time.time() < deadline and not jobs.status(name).done, jobs.status(name).message
        time.sleep(0.2)
    jobs.kill(name)  # SIGKILL: no chance to clean up
    st = jobs.status(name)
    assert st.state == "failed" and "killed by signal 9" in st.message and "resume" in st.message
    ck = last_checkpoint(tmp_path / name)
    step = json.loads((ck / "step.json").read_text())["step"]
    assert step >= 20
    handle = load_model(ModelSpec(model=str(ck)))  # the adapter checkpoint loads as a model
    assert handle.info.kind == "seq_cls"

    jobs.resume(name)
    progress = tmp_path / name / "progress.jsonl"
    while '"event": "train"' not in progress.read_text().split('"event": "resume"', 1)[-1] \
            or '"event": "resume"' not in progress.read_text():  # training again after the resume
        assert time.time() < deadline + 120 and not jobs.status(name).done, jobs.status(name).message
        time.sleep(0.2)
    jobs.cancel(name)  # SIGTERM: saves a checkpoint, then stops
    st = jobs.wait(name, timeout=120)
    assert st.state == "cancelled", st.message
    events = [json.loads(x) for x in (tmp_path / name / "progress.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resume"]
    assert resumed and resumed[0]["step"] == step
    first_after = next(e for e in events[events.index(resumed[0]):] if e["event"] == "train")
    assert first_after["step"] > step  # continued from its step, not from zero
    assert last_checkpoint(tmp_path / name).name > ck.name  # cancel saved a newer checkpoint


def test_bad_input_gives_a_clear_message(tmp_path, tiny_models):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(UserError, match="no rows"):
        train_run(FinetuneSpec(model="default", data=DataSpec(train_path=str(empty), text_column="text",
                                                                label_column="label")), tmp_path / "a")
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"w{i} w{i+1},{'w0' if i % 2 else 'w1'}\n" for i in range(20)))
    with pytest.raises(UserError, match="no column 'sentiment'"):
        train_run(FinetuneSpec(model="default", data=DataSpec(train_path=str(data), text_column="text",
                                                                label_column="sentiment")), tmp_path / "b")
    with pytest.raises(UserError, match="causal objective needs a causal language model"):
        train_run(FinetuneSpec(model=str(tiny_models["bert"]), data=DataSpec(task="sentiment"),
                               objective="causal"), tmp_path / "c")
    # the failure is in the run's progress file too, for the app to show
    assert read_status(tmp_path / "c").state == "failed"
    res = cli("finetune", "--task", "wordgroups", "--lr", "fast", "--out", str(tmp_path / "d"))
    assert res.returncode == 2 and "--lr: invalid float value: 'fast'" in res.stderr
    res = cli("finetune", "--task", "nope", "--out", str(tmp_path / "e"))
    assert res.returncode == 2 and "No built-in task 'nope'" in res.stderr
    with pytest.raises(UserError, match="learning rate"):
        FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), lr=5.0).check()


def test_a_full_disk_fails_cleanly_and_keeps_saved_checkpoints(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    import core.finetune.train as ft
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), epochs=1, batch_size=32, eval_every=10)
    real = shutil.disk_usage
    calls = {"n": 0}

    def usage(path):
        calls["n"] += 1
        free = real(path).free if calls["n"] <= 2 else 1000  # room for two saves, then the disk is full
        return namedtuple("usage", "total used free")(1, 1, free)

    monkeypatch.setattr(ft.shutil, "disk_usage", usage)
    with pytest.raises(UserError, match="Not enough disk space"):
        train_run(spec, tmp_path / "run")
    st = read_status(tmp_path / "run")
    assert st.state == "failed" and "disk" in st.message
    ck = last_checkpoint(tmp_path / "run")
    assert ck is not None and ck.name == "step-000020"
    load_model(ModelSpec(model=str(ck)))  # still loadable


@pytest.mark.gpu
def test_lora_on_the_gpu_in_bf16(tmp_path):
    import torch
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), lr=3e-3, epochs=12, batch_size=32,
                        device="cuda", precision="auto")
    metrics = train_run(spec, tmp_path / "run")
    assert metrics["eval_accuracy"] >= 0.9
    events = [json.loads(x) for x in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["device"].startswith("cuda")
    assert start["precision"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert any(e.get("gpu_memory_bytes") for e in events if e["event"] == "train")


def test_uploaded_data_is_kept_with_the_run(tmp_path):
    data = tmp_path / "upload.csv"
    data.write_text("text,label\n" + "".join(f"w{i} w{i + 1},{'w0' if i % 2 else 'w1'}\n" for i in range(40)))
    jobs = FinetuneJobs(tmp_path / "runs")
    spec = FinetuneSpec(model="default", data=DataSpec(train_path=str(data), text_column="text", label_column="label"),
                        epochs=1, batch_size=8)
    name = jobs.submit(spec)
    data.unlink()  # the browser's temporary upload goes away
    st = jobs.wait(name, timeout=120)
    assert st.state == "finished", st.message
    kept = json.loads((tmp_path / "runs" / name / "spec.json").read_text())["data"]["train_path"]
    assert Path(kept).is_file() and Path(kept).parent.name == "data"


def test_the_default_schedule_keeps_evaluation_and_checkpoints_a_small_share():
    from core.finetune.schedule import OVERHEAD_SHARE, eval_due
    # a slow evaluation (40 s for 20 s of training, as on a 135M model): the next tenth is skipped ...
    assert eval_due(2, 20, 0, {"train": 0.0})                       # the first tenth: cost unknown, evaluate
    assert not eval_due(4, 20, 0, {"train": 20, "eval": 30, "checkpoint": 10, "last_overhead": 40})
    assert not eval_due(3, 20, 0, {"train": 20})                    # not on the grid of tenths
    assert eval_due(20, 20, 0, {"train": 20, "eval": 30, "checkpoint": 10, "last_overhead": 40})  # the end
    # ... while a cheap one (1 s for 100 s of training) stays on every tenth
    assert eval_due(4, 20, 0, {"train": 100, "eval": 0.8, "checkpoint": 0.2, "last_overhead": 1})
    assert eval_due(3, 20, 3, {"train": 1, "eval": 100})             # an explicit interval is kept
    assert 0 < OVERHEAD_SHARE <= 0.15
