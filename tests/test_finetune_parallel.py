"""Fine-tuning across processes: two ranks on the gloo backend (torchrun) train like one process with the same
global batch, the saved model is the same, Cancel stops every rank with a checkpoint and resume finishes the run;
a shared server bounds the processes a visitor may ask for."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from core.finetune.jobs import FinetuneJobs
from core.finetune.parallel import Ranks, launch_command
from core.finetune.train import train_run
from core.finetune.types import DataSpec, FinetuneSpec

ROOT = Path(__file__).resolve().parent.parent


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "progress.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "train"]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("method,objective,how", [("lora", "causal", "ddp"), ("full", "causal", "fsdp"),
                                                  ("lora", "classification", "fsdp")])
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, method, objective, how):
    args = ["--model", "default", "--task", "wordgroups", "--objective", objective, "--method", method, "--parallel", how,
            "--lora-dropout", "0", "--batch-size", "8", "--max-steps", "6", "--eval-every", "3", "--threads", "1"]
    # dropout off: each rank draws its own dropout masks, so with dropout the runs agree only in distribution
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), objective=objective, method=method,
                        lora_dropout=0.0, batch_size=8, max_steps=6, eval_every=3)
    one = train_run(spec, tmp_path / "one")
    out = subprocess.run([sys.executable, "-m", "core", "finetune", *args, "--processes", "2", "--out",
                          str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 6 and max(abs(x - y) for x, y in zip(a, b)) <= 1e-4
    assert two["eval_accuracy"] == one["eval_accuracy"] and two["steps"] == 6
    start = json.loads((tmp_path / "two" / "progress.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2
    # the saved model: the same weights, and it reloads and scores the held-out set the same
    w1, w2 = weights(Path(one["model_path"])), weights(Path(two["model_path"]))
    # gradients summed in another order (across ranks, FSDP's reduce-scatter) round differently, and Adam's
    # division by sqrt(v) turns that into up to ~1e-4 per weight after six full fine-tuning steps (measured 1.1e-4)
    assert w1.keys() == w2.keys() and max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-3
    if objective == "causal":
        from core.fewshot.run import run_fewshot
        from core.fewshot.types import FewShotConfig
        from core.models.loading import load_model
        from core.models.types import ModelSpec
        from core.tasks import load_builtin
        task = load_builtin("wordgroups")
        acc = [run_fewshot(load_model(ModelSpec(p)), task, FewShotConfig(k=0, limit=40)).metrics.accuracy
               for p in (one["model_path"], two["model_path"])]
        assert acc[0] == acc[1]


def test_cancel_stops_every_rank_with_a_checkpoint_and_resume_finishes(tmp_path):
    """FSDP: the checkpoint holds the gathered weights and optimiser state, and resume shards them again."""
    jobs = FinetuneJobs(tmp_path / "runs", threads=1)
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups"), objective="causal", method="lora",
                        batch_size=8, max_steps=60, eval_every=30, processes=2, parallel="fsdp")
    name = jobs.submit(spec)
    deadline = time.monotonic() + 300
    while jobs.status(name).step < 3:
        assert not jobs.status(name).done and time.monotonic() < deadline, jobs.status(name).message
        time.sleep(0.2)
    jobs.cancel(name)
    st = jobs.wait(name, 300)
    assert st.state == "cancelled" and st.checkpoints, st.message
    pid = int((tmp_path / "runs" / name / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # torchrun and both ranks are gone
        os.killpg(pid, 0)
    stopped_at = st.step
    jobs.resume(name)
    st = jobs.wait(name, 600)
    assert st.state == "finished" and st.step == 60 and st.metrics["steps"] == 60
    resumed = [json.loads(line) for line in (tmp_path / "runs" / name / "progress.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume" and e["step"] == stopped_at for e in resumed)


def test_the_batch_is_shared_and_the_processes_bounded():
    assert Ranks(0, 2).shard(list(range(7))) == [0, 2, 4, 6] and Ranks(1, 2).shard(list(range(7))) == [1, 3, 5]
    assert Ranks().shard([3, 1]) == [3, 1]
    assert launch_command(["--out", "x"], 1)[-3:] == ["finetune", "--out", "x"]
    cmd = launch_command(["--out", "x"], 3)
    assert "torch.distributed.run" in cmd and "--nproc-per-node=3" in cmd
    data = DataSpec(task="wordgroups")
    with pytest.raises(UserError, match="at most 4 processes"):
        FinetuneSpec(model="default", data=data, batch_size=4, processes=5).check()
    with pytest.raises(UserError, match="device map"):
        FinetuneSpec(model="default", data=data, processes=2, device_map="auto").check()


def test_a_shared_server_allows_the_processes_its_operator_set(tmp_path):
    from core.engine import Engine
    from core.finetune.requests import FinetuneRequest
    from core.models.types import AppConfig, Limits
    req = FinetuneRequest(model="default", task="wordgroups", processes=2, max_steps=2)
    exposed = Engine(AppConfig(host="0.0.0.0", model=None, runs_dir=tmp_path / "a"))
    with pytest.raises(UserError, match="allows 1 training process"):
        exposed.finetune.check_limits([req.to_spec()], "s1")
    wider = Engine(AppConfig(host="0.0.0.0", model=None, runs_dir=tmp_path / "b",
                             limits=Limits(runs_per_session=1, train_processes=2)))
    wider.finetune.check_limits([req.to_spec()], "s1")  # allowed
    assert torch.distributed.is_available()


def test_the_cli_in_process_launches_the_ranks_itself(tmp_path):
    """``core.cli.main([...'--processes', '2'])`` from Python (a notebook) runs the same command under torchrun."""
    import core.cli
    out = tmp_path / "run"
    core.cli.main(["finetune", "--model", "default", "--task", "wordgroups", "--objective", "causal", "--batch-size",
                   "4", "--max-steps", "2", "--eval-every", "2", "--threads", "1", "--processes", "2", "--out",
                   str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert json.loads((out / "progress.jsonl").read_text().splitlines()[0])["processes"] == 2
