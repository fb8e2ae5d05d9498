"""The experiment history: recorded as runs finish, reopened as they were, safe under kills and concurrency."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from core.errors import UserError
from core.history.store import DB_NAME, MIGRATIONS, SCHEMA_VERSION, Example, History

ROOT = Path(__file__).resolve().parent.parent
from fewshot_form import TASK
from fewshot_form import configs as form_configs
CONFIG = dict(use=True, model="el-2l-128", k=2, selection="first", seed=0, order="as_chosen",
              perturb="gold", flip=0.5, calibrate=False, per_query=False, variant="")


def configs(*overrides):
    return form_configs(CONFIG, *overrides)


def test_a_fewshot_comparison_is_kept_reopened_tagged_and_exported(client, app_server):
    engine, _ = app_server
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    note, _plot, summary, *_ = client.predict(*TASK, *configs(dict(k=2), dict(k=0)), "", 24, api_name="/fewshot_run")
    run_id = note.split("`")[1]
    # a reload: a new session sees it in the list
    from gradio_client import Client
    other = Client(app_server[1], verbose=False)
    listing, _notice = other.predict("fewshot", "", "", api_name="/history_list")
    assert run_id in [r[0] for r in listing["data"]]
    status, summary2, examples, prompts, plot, raw, _shared = other.predict(run_id, api_name="/history_reopen")
    assert summary2["data"] == summary["data"] and "as it was" in status  # the same numbers
    col = examples["headers"].index("B ✓")  # B: k=0, at chance on recall: errors to look at
    wrong = [int(r[0]) for r in examples["data"] if r[col] == "✗"][:3]
    assert len(wrong) == 3
    msg = other.predict(run_id, ",".join(map(str, wrong)), "label noise", "looked at it", api_name="/history_tag_examples")
    assert "Tagged 3" in msg
    csv_path, json_path, html_path = other.predict(run_id, "label noise", api_name="/history_export")
    assert plot is not None and "plotly" in open(html_path).read()[:200000]  # the plot, as a page that opens offline
    lines = open(csv_path).read().strip().splitlines()
    assert len(lines) == 1 + 3 * 2 and all("label noise" in ln for ln in lines[1:])  # 3 examples x 2 configs
    assert json.load(open(json_path))["run"]["id"] == run_id
    tagged, _notice = other.predict("", "", "label noise", api_name="/history_list")
    assert [r[0] for r in tagged["data"]] == [run_id]
    with pytest.raises(AppError, match="yes, delete it"):
        other.predict(run_id, False, "", "", "", api_name="/history_delete")


def test_every_lab_reopens_with_its_plot(app_server):
    """Attention, attribution, ablation scans, emergence sweeps and sweeps are drawn again from what was stored."""
    from core.attention.requests import AttentionRequest
    from core.attribution.requests import AttributionRequest
    from core.emergence.requests import SweepSeriesRequest
    from core.interventions.requests import AblationRequest
    from ui.history_plots import figure_of
    engine, _ = app_server
    engine.models.load(engine.models.spec("default"))
    engine.attention.run(AttentionRequest(model="el-2l-128", text="w1 w2 w1 w2", layer=1, head=3))
    engine.attribution.run(AttributionRequest(model="el-2l-128", prompt="w3 = w17 ; w3 =", target=" w17",
                                        method="ablation", granularity="word"))
    engine.interventions.ablation_scan(AblationRequest.from_mapping(dict(model="el-2l-128", task="recall", k=2, limit=6)))
    engine.emergence.sweep(SweepSeriesRequest.from_mapping(dict(source="models", models="el-1l-64,el-2l-128",
                                                                task="recall", k=2, limit=6, seeds=1)))
    for lab in ("attention", "attribution", "ablation-scan", "emergence"):
        rec = engine.history.runs(lab=lab)[0]
        fig = figure_of(rec, engine.runtime.history.result(rec.id))
        assert fig is not None and len(fig.data) >= 1, lab


def test_an_ablation_is_kept_and_a_series_is_listed_with_its_last_point(app_server):
    """(issue 29: a single Ablate run never appeared in the History, and an emergence run was listed with its
    first checkpoint's accuracy)"""
    from core.emergence.requests import SweepSeriesRequest
    from core.interventions.requests import AblationRequest
    from ui.tabs.history import runs_table
    engine, _ = app_server
    engine.models.load(engine.models.spec("default"))
    plain, ablated = engine.interventions.ablate(AblationRequest.from_mapping(dict(model="el-2l-128", task="recall", k=4,
                                                                     limit=8, ablate_heads="1.3")))
    rec = engine.history.runs(lab="ablation")[0]
    _, runs, _ = engine.history.reopen(rec.id)
    assert [r.config.name for r in runs] == ["A: all heads", "B: 1.3 zero-ablated"]
    assert [r.metrics.accuracy for r in runs] == [plain.metrics.accuracy, ablated.metrics.accuracy]
    assert runs_table([rec])["accuracy"][0] == round(ablated.metrics.accuracy, 3)
    points = engine.emergence.sweep(SweepSeriesRequest.from_mapping(dict(source="models", models="el-1l-64,el-2l-128",
                                                                         task="recall", k=2, limit=6, seeds=1)))
    listed = runs_table([engine.history.runs(lab="emergence")[0]])
    assert listed["accuracy"][0] == round(points[-1].metrics["accuracy"], 3)


def test_the_history_survives_a_restart(tmp_path):
    h = History(tmp_path)
    rid = h.record("fewshot", {"k": 4}, {"A": {"accuracy": 0.5}}, model="m", task="t",
                   examples=[Example("A", 0, "q", "g", "p", [-1.0, -2.0], False)], result={"x": 1})
    again = History(tmp_path)  # another process, or the app after a restart
    assert again.get(rid).summary == {"A": {"accuracy": 0.5}} and again.result(rid) == {"x": 1}
    assert again.examples(rid)[0].logprobs == [-1.0, -2.0]


def test_a_database_of_the_previous_version_is_upgraded_without_loss(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    for stmt in (s.strip() for s in MIGRATIONS[0].split(";")):
        if stmt:
            db.execute(stmt)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO runs (id, lab, name, created, request, summary) VALUES ('old', 'fewshot', 'kept', 1.0, "
               "'{}', '{\"A\": {\"accuracy\": 0.9}}')")
    db.execute("INSERT INTO examples VALUES ('old', 'A', 0, 'q', 'g', 'g', '[-0.1]', 1)")
    db.commit()
    db.close()
    h = History(tmp_path)
    assert History.version(h._connect()) == SCHEMA_VERSION
    rec = h.get("old")
    assert rec.name == "kept" and rec.summary["A"]["accuracy"] == 0.9 and rec.note == ""
    h.tag_examples("old", [0], "checked")
    assert h.examples("old")[0].tags == ("checked",)


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from core.history.store import History, Example
h = History({folder!r})
n = 0
while True:
    h.record("fewshot", {{"n": n}}, {{"n": n}}, examples=[Example("A", i, "q", "g", "p", [0.0], True) for i in range(20)])
    n += 1
    print(n, flush=True)
"""


def test_kill_9_during_a_burst_of_writes_leaves_a_consistent_database(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), folder=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    for _ in range(30):  # wait for 30 committed runs (each printed after its commit)
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    h = History(tmp_path)
    assert h.integrity() == "ok"
    runs = h.runs(limit=10_000)
    assert len(runs) >= 30
    assert all(len(h.examples(r.id)) == 20 for r in runs)  # no run without its rows: all or nothing


def test_concurrent_writers_from_threads_and_processes(tmp_path):
    h = History(tmp_path)
    errors = []

    def write(k):
        try:
            for i in range(10):
                h.record("fewshot", {"t": k, "i": i}, {}, examples=[Example("A", 0, "q", "g", "p", [0.0], True)])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    other = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), folder=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(10):
        other.stdout.readline()
    other.kill()
    other.wait()
    assert not errors and h.integrity() == "ok"
    assert len([r for r in h.runs(limit=10_000) if "t" in r.request]) == 40


def test_a_read_only_folder_is_a_message_and_the_engine_still_works(tmp_path):
    if os.geteuid() == 0:
        folder = tmp_path / "not-a-folder"
        folder.write_text("a file where the runs folder should be")  # root ignores permissions: block it so
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    with pytest.raises(UserError, match="cannot be opened"):
        History(folder)
    from core.engine import Engine
    from core.models.types import AppConfig
    engine = Engine(AppConfig(runs_dir=folder, model=None))  # as root too: the blocked folder is a file then
    assert engine.runtime.history is None and "cannot be opened" in engine.runtime.history_error
    assert any(value == "el-2l-128" for _, value in engine.catalogue.model_choices())  # the pickers still fill
    assert engine.finetune.runs() == []
    with pytest.raises(UserError, match="cannot be opened"):  # the History tab says why it is empty
        engine.history.runs()


def test_cli_history_list_show_export_rm(tmp_path):
    h = History(tmp_path)
    rid = h.record("fewshot", {"k": 2}, {"A": {"accuracy": 1.0}}, examples=[Example("A", 5, "q", "g", "g", [0.0], True)])
    h.tag_examples(rid, [5], "checked")

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "core", "history", *args, "--runs-dir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    assert json.loads(run("list"))[0]["id"] == rid
    assert json.loads(run("show", rid))["examples"][0]["tags"] == ["checked"]
    out = tmp_path / "ex.csv"
    run("export", rid, "--tag", "checked", "--out", str(out))
    assert "checked" in out.read_text().splitlines()[1]
    run("rm", rid)
    assert json.loads(run("list")) == []


def test_a_reopened_sweep_draws_the_figure_the_run_drew(app_server):
    """(issue 29: 'as it was drawn' lost a sweep's error bars and chance line and changed its colours)"""
    from core.fewshot.requests import FewShotRequest, SweepRequest
    from core.lessons.service import builtin_task
    from ui.fewshot_plots import sweep_figure
    from ui.history_plots import figure_of
    engine, _ = app_server
    engine.models.load(engine.models.spec("default"))
    run = FewShotRequest.from_mapping(dict(task=builtin_task("recall").to_dict(), limit=12, configs=[
        dict(model="el-2l-128", k=4, selection="random"), dict(model="el-2l-128", k=4, selection="nearest")]))
    series = engine.fewshot.sweep(SweepRequest(run=run, axis="k", values=(0, 2, 4), seeds=(0, 1, 2)).check())
    drawn = sweep_figure(series, "k", ["accuracy"])
    rec = engine.history.runs(lab="sweep")[0]
    again = figure_of(rec, engine.runtime.history.result(rec.id))
    assert again.to_plotly_json()["data"] == drawn.to_plotly_json()["data"]  # names, colours, means, error bars
    assert again.layout.shapes == drawn.layout.shapes and len(drawn.layout.shapes) == 1  # the chance line
    assert [a.text for a in again.layout.annotations] == [a.text for a in drawn.layout.annotations]
