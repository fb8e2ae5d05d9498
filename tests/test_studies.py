"""Studies: methods side by side and "how many examples is a prompt worth?", through the engine and the CLI."""
import json

import pytest

from core.engine import Engine
from core.errors import UserError
from core.finetune.requests import DataEfficiencyRequest, MethodsRequest
from core.finetune.studies import FewShotPoint, Study, StudyRun
from core.finetune.types import DEFAULT_LR_SMALL
from core.models.types import AppConfig


@pytest.fixture
def engine(tmp_path):
    e = Engine(AppConfig(model=None, runs_dir=tmp_path / "runs", offline=True))
    yield e
    e.runtime.finetune_jobs.shutdown()


def test_methods_side_by_side_share_task_data_and_budget(engine):
    req = MethodsRequest.from_mapping(dict(model="default", task="wordgroups", methods="lora,prefix,full",
                                           max_steps=6, batch_size=32, method_lrs="lora=3e-3, full=1e-3"))
    sid = engine.studies.methods_start(req, session="a")
    assert engine.studies.ids() == [sid]
    st = engine.studies.wait(sid, poll=0.3)
    assert st.done and [r.method for r in st.runs] == ["lora", "prefix", "full"]
    assert all(r.state == "finished" for r in st.runs), [r.message for r in st.runs]
    by = {r.method: r for r in st.runs}
    assert by["full"].trainable_share == 1.0 and 0 < by["prefix"].trainable_share < by["lora"].trainable_share < 1
    for r in st.runs:
        assert r.score is not None and r.loss_curve and len(r.loss_curve) == 6 and r.tokens_per_second > 0
        assert r.peak_memory_bytes > 0
    specs = [json.loads((engine.runtime.finetune_jobs.run_dir(r.name) / "spec.json").read_text()) for r in st.runs]
    assert [s["lr"] for s in specs] == [3e-3, None, 1e-3]  # lora, full as asked; prefix: the trainer's default
    assert engine.finetune.status(by["prefix"].name).lr == DEFAULT_LR_SMALL["prefix"]  # for a model of this size
    assert len({json.dumps([s["data"], s["max_steps"], s["batch_size"], s["seed"]]) for s in specs}) == 1
    assert "3 of 3 runs finished" in st.progress
    # the runs are ordinary runs: listed, loadable
    assert {r.name for r in st.runs} <= {r.name for r in engine.finetune.runs()}


def test_data_efficiency_measures_both_curves_on_the_same_rows(engine):
    req = DataEfficiencyRequest.from_mapping(dict(model="default", task="wordgroups", sizes="8,32", ks="0,2",
                                                  seeds=2, max_steps=5, batch_size=16, lr="3e-3"))
    assert [(n, seed) for n, seed, _ in req.specs()] == [(8, 0), (8, 1), (32, 0), (32, 1)]
    req = DataEfficiencyRequest.from_mapping(dict(model="default", task="wordgroups", sizes="8,32", ks="0,2",
                                                  seeds=1, max_steps=5, batch_size=16, lr="3e-3"))
    sid = engine.studies.data_efficiency_start(req, session="a")
    st = engine.studies.wait(sid, poll=0.3)
    assert [(r.size, r.seed) for r in st.runs] == [(8, 0), (32, 0)]
    assert all(r.state == "finished" for r in st.runs), [r.message for r in st.runs]
    assert [(p.k, p.seed) for p in st.fewshot] == [(0, 0), (2, 0)]
    assert [n for n, *_ in st.finetune_curve()] == [8, 32] and [k for k, *_ in st.fewshot_curve()] == [0, 2]
    for r in st.runs:  # each run trained on its own sample of N, for the same number of steps
        status = engine.finetune.status(r.name)
        assert status.total_steps == 5
        spec = json.loads((engine.runtime.finetune_jobs.run_dir(r.name) / "spec.json").read_text())
        assert spec["train_size"] == r.size and spec["seed"] == r.seed
    d = st.to_dict()
    assert {"finetune_curve", "fewshot_curve", "crossing"} <= set(d) and d["crossing"]["reference"] is not None


def test_the_crossing_point_is_interpolated_in_log_n():
    runs = [StudyRun(f"r{n}{s}", "lora", n, s, "finished", score) for n, s, score in
            [(8, 0, 0.5), (8, 1, 0.5), (32, 0, 0.7), (32, 1, 0.7), (128, 0, 0.9), (128, 1, 0.9)]]
    prompt = [FewShotPoint(0, 0, 0.6), FewShotPoint(4, 0, 0.8), FewShotPoint(4, 1, 0.8)]
    st = Study("s", "data-efficiency", "m", "t", "accuracy", runs, prompt)
    c = st.crossing()
    assert c["reference"] == pytest.approx(0.8) and c["k"] == 4
    assert c["size"] == pytest.approx(64.0)  # halfway between 32 and 128 on a log scale
    assert "about 64 training examples" in c["note"]
    never = Study("s", "data-efficiency", "m", "t", "accuracy", runs, [FewShotPoint(4, 0, 0.95)])
    assert never.crossing()["size"] is None and "stays below" in never.crossing()["note"]
    early = Study("s", "data-efficiency", "m", "t", "accuracy", runs, [FewShotPoint(0, 0, 0.3)])
    assert early.crossing()["size"] == 8.0 and "already matches" in early.crossing()["note"]


def test_bad_study_requests_are_refused_before_anything_runs(engine, tiny_models):
    with pytest.raises(UserError, match="Unknown method 'bitfit'"):
        MethodsRequest.from_mapping(dict(model="default", task="wordgroups", methods="lora,bitfit"))
    with pytest.raises(UserError, match="'method=rate"):
        MethodsRequest.from_mapping(dict(model="default", task="wordgroups", method_lrs="fast"))
    with pytest.raises(UserError, match="step budget"):
        DataEfficiencyRequest.from_mapping(dict(model="default", task="wordgroups"))
    with pytest.raises(UserError, match="token classification has no prompt"):
        DataEfficiencyRequest.from_mapping(dict(model="default", task="ner", objective="token-classification",
                                                max_steps=5))
    req = DataEfficiencyRequest.from_mapping(dict(model=str(tiny_models["bert_cls"]), task="sentiment", sizes="8",
                                                  ks="0", seeds=1, max_steps=2))
    with pytest.raises(UserError, match="needs a causal language model"):
        engine.studies.data_efficiency_start(req)
    assert engine.studies.ids() == [] and engine.finetune.runs() == []  # nothing queued, nothing recorded


def test_a_failed_prompting_step_cancels_the_study_and_says_why(engine):
    req = DataEfficiencyRequest.from_mapping(dict(model="default", task="wordgroups", sizes="8", ks="0,12",
                                                  seeds=1, max_steps=50, batch_size=8))
    with pytest.raises(UserError, match="context holds 64"):  # twelve demonstrations do not fit
        engine.studies.data_efficiency_start(req)
    st = engine.studies.wait(engine.studies.ids()[0], poll=0.3)
    assert "Prompting failed" in st.error and all(r.state in ("cancelled", "finished") for r in st.runs)


def test_only_the_session_that_started_a_study_cancels_it(engine):
    req = MethodsRequest.from_mapping(dict(model="default", task="wordgroups", methods="lora,ia3", max_steps=400,
                                           batch_size=32))
    sid = engine.studies.methods_start(req, session="a")
    with pytest.raises(UserError, match="another browser session"):
        engine.studies.cancel(sid, session="b")
    assert "Cancelling 2 run(s)" in engine.studies.cancel(sid, session="a")
    st = engine.studies.wait(sid, poll=0.3)
    assert {r.state for r in st.runs} == {"cancelled"}


def test_the_cli_runs_a_method_comparison(tmp_path, capsys):
    from core.cli import main
    main(["finetune-compare", "--model", "default", "--task", "wordgroups", "--methods", "ia3,prompt",
          "--max-steps", "4", "--batch-size", "32", "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr()
    d = json.loads(out.out)
    assert d["kind"] == "methods" and d["done"] and [r["method"] for r in d["runs"]] == ["ia3", "prompt"]
    assert all(r["state"] == "finished" and r["trainable_params"] for r in d["runs"])
    assert "queued" in out.err and "finished" in out.err
