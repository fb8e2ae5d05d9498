"""A server a class shares, the engine's side: remote code, dataset names and endpoint keys are the operator's
decision; CSV exports cannot run formulas; the History belongs to owners; a Cancel holds while a job waits; a
slow load holds nobody up; a full or read-only disk stops only recording; the operator's limits hold."""
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.engine import Engine
from core.errors import Cancelled, ModelLoadError, PathNotAllowedError, UserError
from core.exports import Exports, csv_text, safe_cell
from core.history.store import Example, History
from core.jobs import JobContext, Jobs
from core.models.requests import LoadRequest
from core.models.resolve import REFUSED_DATASET, PathPolicy
from core.models.types import AppConfig, Limits
from served_stub import Silent, Stub

ROOT = Path(__file__).resolve().parent.parent


def remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config points at code in the folder; importing that code writes ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil-net", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('remote code ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil-net'\n"
        "class EvilModel:\n    pass\n")
    return folder


# ---- remote code ------------------------------------------------------------------------------
def test_remote_code_is_the_operators_decision_on_an_exposed_server(tmp_path):
    marker = tmp_path / "ran.txt"
    inside = remote_code_model(tmp_path / "models" / "evil", marker)
    exposed = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path / "runs",
                               model_dirs=(tmp_path / "models",), offline=True))
    with pytest.raises(PathNotAllowedError, match="operator's decision"):
        exposed.models.load(LoadRequest(model=str(inside), trust_remote_code=True))
    with pytest.raises(ModelLoadError, match="only the operator"):
        exposed.models.load(LoadRequest(model=str(inside)))  # unticked: transformers refuses the code
    assert not marker.exists()
    local = Engine(AppConfig(model=None, runs_dir=tmp_path / "runs2", offline=True))
    with pytest.raises(ModelLoadError, match="Tick 'trust remote code'"):
        local.models.load(LoadRequest(model=str(inside)))
    assert not marker.exists()
    # the operator's list: that model's code runs (whatever the visitor ticked) — and only that one's
    allowed = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path / "runs3", offline=True,
                               model_dirs=(tmp_path / "models",), trust_remote_code_for=(str(inside),)))
    with pytest.raises(ModelLoadError):
        allowed.models.load(LoadRequest(model=str(inside)))  # the toy code is no real model, but it ran
    assert marker.exists()


def test_the_policy_decides_remote_code_from_the_operators_list():
    exposed = PathPolicy(allow_any=False, trusted_code=("org/ok",))
    assert exposed.remote_code("org/ok", False) is True
    assert exposed.remote_code("org/other", False) is False
    with pytest.raises(PathNotAllowedError):
        exposed.remote_code("org/other", True)
    assert PathPolicy().remote_code("org/other", True) is True  # one person's own machine: their choice


# ---- dataset names ----------------------------------------------------------------------------
def test_dataset_names_never_reach_the_local_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "train.csv").write_text("text,label\npassword,1\n")
    exposed = PathPolicy(allow_any=False)
    messages = set()
    for name in ("/etc", "/no/such/folder", "../..", "../../nowhere", "~/.ssh", str(tmp_path / "secrets"),
                 "a/b/c", "./secrets"):
        with pytest.raises(PathNotAllowedError) as err:
            exposed.check_dataset(name)
        messages.add(str(err.value))
    assert messages == {REFUSED_DATASET}  # one message: it never says whether a path exists
    exposed.check_dataset("stanfordnlp/imdb")  # Hub ids pass the policy
    # and a Hub-shaped name that is also a local folder is fetched from the Hub only, never read here
    from core.tasks import load_hub_dataset
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="from the Hub") as err:
        load_hub_dataset("secrets")
    assert "password" not in str(err.value)
    for path in ("/etc", "../secrets", str(tmp_path / "secrets")):  # on one's own machine too: upload files
        with pytest.raises(UserError, match="not a Hub dataset id"):
            load_hub_dataset(path)


def test_the_engine_checks_dataset_names_in_few_shot_and_fine_tuning(tmp_path):
    from core.fewshot.requests import TaskRequest
    from core.finetune.requests import FinetuneRequest
    engine = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path, offline=True))
    with pytest.raises(PathNotAllowedError, match="Hub dataset ids only"):
        engine.fewshot.task(TaskRequest.from_mapping(dict(source="hub dataset", hub_id="/etc", label_column="label",
                                                  input_template="{text}")))
    with pytest.raises(PathNotAllowedError, match="Hub dataset ids only"):
        engine.finetune.preview(FinetuneRequest.from_mapping(dict(model="default", source="hub dataset",
                                                                  hub_id="../..")))
    assert engine.finetune.runs() == []


# ---- endpoint keys ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama(tiny_models):
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    return load_model(ModelSpec(str(tiny_models["llama"])))


def test_a_visitor_never_names_the_servers_environment_variables(tmp_path, llama, monkeypatch):
    stub = Stub(llama.model, llama.tokenizer)
    monkeypatch.setenv("EL_OPERATOR_KEY", "the-operators-key")
    monkeypatch.setenv("EL_SECRET", "a-secret-of-the-server")
    try:
        engine = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path, offline=True,
                                  endpoints=(f"{stub.url};key=EL_OPERATOR_KEY",)))
        for env in ("EL_SECRET", "HOME", "NO_SUCH_VARIABLE"):
            with pytest.raises(PathNotAllowedError, match="keys come only from the operator") as err:
                engine.models.load(LoadRequest(model=f"openai+{stub.url}#stub-model;key={env}"))
            assert "not set" not in str(err.value)  # the same words whether the variable exists or not
        assert stub.requests == 0
        engine.models.load(LoadRequest(model=f"openai+{stub.url}#stub-model"))
        assert set(stub.auth) == {"Bearer the-operators-key"}
        assert not any("secret" in (a or "") or os.environ["HOME"] in (a or "") for a in stub.auth)
    finally:
        stub.close()


def test_on_ones_own_machine_the_key_variable_is_the_users_choice(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    mine = PathPolicy(endpoints=("http://h/v1;key=OP",))
    assert mine.endpoint_key("http://h/v1", "MINE") == "MINE"
    assert mine.endpoint_key("http://h/v1/", None) == "OP"
    assert PathPolicy().endpoint_key("http://other/v1", None) is None
    assert PathPolicy(allow_any=False, endpoints=("http://h/v1",)).endpoint_key("http://h/v1", None) is None


# ---- CSV exports ------------------------------------------------------------------------------
def test_every_csv_cell_that_a_spreadsheet_would_run_is_escaped(tmp_path):
    formulas = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=cmd|' /C calc'!A0"]
    for f in formulas:
        assert safe_cell(f) == "'" + f
    for keep in ("-1.5", "+3", "-2e-05", "1e3", "plain", "", "a=b", 3, -2.0, None):
        assert safe_cell(keep) == keep
    text = csv_text(["input", "score"], [[f, -0.5] for f in formulas])
    cells = [row[0] for row in csv.reader(io.StringIO(text, newline=""))][1:]
    assert all(c.startswith("'") for c in cells) and "-0.5" in text
    ex = Exports(tmp_path)  # whatever wrote the CSV (pandas here), the export is escaped; JSON stays exact
    path = ex.write("s", "rows.csv", "a,b\n=1+1,-3\n@x,ok\n")
    assert path.read_text() == "a,b\n'=1+1,-3\n'@x,ok\n"  # (read back with universal newlines)
    assert json.loads(ex.write("s", "run.json", json.dumps({"input": "=1+1"})).read_text()) == {"input": "=1+1"}


def test_the_history_exports_its_examples_escaped(tmp_path):
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    rid = engine.runtime.history.record("fewshot", {}, {}, examples=[Example("A", 0, "=2+2", "@gold", "-x", [0.1], True)])
    rows = list(csv.reader(io.StringIO(engine.history.examples_csv(rid), newline="")))
    assert rows[1][3:6] == ["'=2+2", "'@gold", "'-x"]


# ---- History owners ---------------------------------------------------------------------------
def test_each_owner_sees_its_runs_and_the_shared_ones_read_only(tmp_path):
    h = History(tmp_path)
    a = h.record("attention", {}, {}, owner="browser:a")
    b = h.record("attention", {}, {}, owner="browser:b")
    assert [r.id for r in h.runs(viewer="browser:a")] == [a]
    assert {r.id for r in h.runs()} == {a, b}  # the CLI and one person's own app see everything
    with pytest.raises(UserError, match="No run"):
        h.get(b, viewer="browser:a")
    h.share(b, True, viewer="browser:b")
    assert {r.id for r in h.runs(viewer="browser:a")} == {a, b}
    assert h.get(b, viewer="browser:a").shared
    for change in (lambda: h.rename(b, "mine now", viewer="browser:a"), lambda: h.set_note(b, "x", "browser:a"),
                   lambda: h.tag(b, "x", viewer="browser:a"), lambda: h.delete(b, viewer="browser:a"),
                   lambda: h.tag_examples(b, [0], "x", viewer="browser:a"),
                   lambda: h.share(b, False, viewer="browser:a")):
        with pytest.raises(UserError, match="someone else's"):
            change()
    assert h.get(b).name != "mine now" and h.get(b).shared


def test_a_shared_servers_engine_records_and_lists_by_owner(tmp_path, tiny_models):
    from core.attention.requests import AttentionRequest
    engine = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path, offline=True,
                              model_dirs=(Path(tiny_models["gpt2"]).parent,)))
    key = engine.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    kept = engine.runtime.sessions.bind_owner("sa", None)
    assert engine.runtime.sessions.bind_owner("sa2", kept) is kept  # the same browser after a reload
    engine.runtime.sessions.bind_owner("sb", "not-an-id-this-server-made")
    with engine.job("sa", "attention") as job:
        engine.attention.run(AttentionRequest(model=key, text="w1 w2 w1 w2", layer=0, head=0), job)
    assert len(engine.history.runs(session="sa")) == 1 and len(engine.history.runs(session="sa2")) == 1
    assert engine.history.runs(session="sb") == []
    rid = engine.history.runs(session="sa")[0].id
    with pytest.raises(UserError, match="No run"):
        engine.history.edit(rid, name="taken", session="sb")
    engine.history.share(rid, True, session="sa")
    with pytest.raises(UserError, match="someone else's"):
        engine.history.delete(rid, True, session="sb")
    assert [r.id for r in engine.history.runs(session="sb")] == [rid]


# ---- jobs: a Cancel sent while the job waits ---------------------------------------------------
def test_a_cancel_sent_while_a_job_waits_stops_it_and_no_other():
    jobs = Jobs()
    mine, other_tab, theirs = jobs.submit("a", "fewshot"), jobs.submit("a", "attention"), jobs.submit("b", "fewshot")
    assert jobs.cancel("a", "fewshot") == 1
    with pytest.raises(Cancelled):
        jobs.start("a", "fewshot", job_id=mine)
    for sid, tab, jid in (("a", "attention", other_tab), ("b", "fewshot", theirs)):
        ctx = jobs.start(sid, tab, job_id=jid)
        assert not ctx.should_stop()
        jobs.finish(ctx)
    fresh = jobs.start("a", "fewshot")  # a later run of the same tab is not the cancelled one
    assert not fresh.should_stop()
    jobs.finish(fresh)
    left = jobs.submit("a", "fewshot")
    jobs.discard(left)  # a call that ended before starting leaves nothing behind
    assert jobs.active() == []


# ---- models: a hanging load holds up nobody ---------------------------------------------------
def test_a_hanging_endpoint_neither_blocks_other_models_nor_resists_cancel(tmp_path, tiny_models):
    silent = Silent()
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True, endpoint_timeout_s=60))
    key = engine.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    ctx = JobContext("a", "model")
    errors = []

    def load():
        try:
            engine.models.load(LoadRequest(model=f"openai+{silent.url}#m"), ctx)
        except UserError as exc:
            errors.append(exc)

    t = threading.Thread(target=load)
    t.start()
    deadline = time.monotonic() + 60
    while not silent.conns and time.monotonic() < deadline:
        time.sleep(0.05)
    assert silent.conns, "the load never reached the endpoint"
    assert engine.runtime.registry.get(key).info.key == key  # another model is served while the load hangs
    assert engine.models.info(key).n_layers == 2
    ctx.cancelled.set()
    t.join(60)
    assert not t.is_alive() and isinstance(errors[0], Cancelled)
    silent.close()


def test_two_sessions_loading_models_at_once_both_get_them(tmp_path):
    """A visitor presses Load while the default model still loads behind the page: both loads succeed (building two
    models at once on transformers' process-wide state once left one with meta tensors: 'Cannot copy out of meta
    tensor')."""
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    barrier, errors, keys = threading.Barrier(3), [], []

    def load(name: str, revision: str | None):
        barrier.wait()
        try:
            keys.append(engine.models.load(LoadRequest(model=name, revision=revision)).key)
        except UserError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=load, args=nr)
               for nr in (("el-1l-64", None), ("el-2l-128", None), ("el-1l-64", "step-00500"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == [] and sorted(keys) == sorted(engine.models.loaded_keys()) and len(keys) == 3
    for key in keys:  # every weight is real (none left on the meta device)
        assert all(p.device.type == "cpu" for p in engine.runtime.registry.get(key).model.parameters())


def test_a_hanging_endpoint_times_out_without_retrying(tmp_path):
    from core.models.served import Client, parse_endpoint
    silent = Silent()
    client = Client(parse_endpoint(f"openai+{silent.url}#m"), timeout=0.5, retries=3)
    with pytest.raises(UserError, match="did not answer within 0.5 s"):
        client.request("GET", f"{silent.url}/models")
    assert len(silent.conns) == 1  # one try: a server that never answers is not asked again
    silent.close()


# ---- a full or read-only disk stops only recording ---------------------------------------------
def test_recording_fails_cleanly_when_the_disk_is_full(tmp_path, monkeypatch):
    import sqlite3
    h = History(tmp_path)
    kept = h.record("attention", {}, {}, result={"a": 1})

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match="No space left"):
        h.record("attention", {}, {}, result={"big": 1})
    monkeypatch.undo()
    real = sqlite3.connect

    def failing(*a, **k):
        db = real(*a, **k)
        if "mode=ro" in str(a[0]) or "immutable" in str(a[0]):
            return db
        return _Full(db)
    monkeypatch.setattr(sqlite3, "connect", failing)
    with pytest.raises(UserError, match="could not be saved"):
        h.record("attention", {}, {})
    monkeypatch.undo()
    assert [r.id for r in h.runs()] == [kept] and not list((tmp_path / "history").glob("*.tmp"))


class _Full:
    """A connection whose writes fail as SQLite's do on a full disk."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            import sqlite3
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    if not _mount_tmpfs(folder, "2m"):
        pytest.skip("this machine cannot mount a tmpfs (needs root); "
                    "test_recording_fails_cleanly_when_the_disk_is_full covers the same paths")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_then_read_only_runs_folder_stops_only_recording(small_disk, tiny_models):
    from core.attention.requests import AttentionRequest
    engine = Engine(AppConfig(model=None, runs_dir=small_disk, offline=True))
    key = engine.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    req = AttentionRequest(model=key, text="w1 w2 w3 w1 w2 w3", layer=0, head=0)
    engine.attention.run(req)
    assert len(engine.history.runs()) == 1 and engine.history.recording_notice() == ""
    with open(small_disk / "filler", "wb") as f:  # fill the disk
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    res = engine.attention.run(req)  # the lab answers
    assert res.n_tokens == 6 and "could not be saved" in engine.history.recording_notice()
    assert len(engine.history.runs()) == 1  # what was saved is listed
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True).returncode == 0
    reopened = Engine(AppConfig(model=None, runs_dir=small_disk, offline=True))  # an app started on it
    assert reopened.history.available() and not reopened.runtime.history.writable
    assert len(reopened.history.runs()) == 1 and "cannot be written" in reopened.history.recording_notice()
    key = reopened.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    assert reopened.attention.run(AttentionRequest(model=key, text="w1 w2 w1", layer=0, head=0)).n_tokens == 3


# ---- the operator's limits --------------------------------------------------------------------
def test_training_limits_hold_and_the_operator_stops_any_run(tmp_path):
    from core.finetune.requests import FinetuneRequest
    engine = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path, offline=True,
                              limits=Limits(runs_per_session=1, train_steps=400)))
    big = FinetuneRequest.from_mapping(dict(model="default", task="wordgroups", epochs=1000, batch_size=8))
    with pytest.raises(UserError, match="at most 400 a run"):
        engine.finetune.start(big, session="s1")
    ok = FinetuneRequest.from_mapping(dict(model="default", task="wordgroups", max_steps=300, batch_size=8,
                                           eval_every=0))
    name = engine.finetune.start(ok, session="s1")
    with pytest.raises(UserError, match="1 fine-tuning run"):
        engine.finetune.start(ok, session="s1")
    with pytest.raises(UserError, match="another browser session"):
        engine.finetune.cancel(name, "s2")
    deadline = time.monotonic() + 300  # the operator, from a shell: python -m core finetune-cancel
    while engine.finetune.status(name).state == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    out = subprocess.run([sys.executable, "-m", "core", "finetune-cancel", name, "--runs-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    st = engine.runtime.finetune_jobs.wait(name, timeout=300)
    assert st.state in ("cancelled", "finished"), st
    assert engine.finetune.start(ok, session="s1")  # its slot is free again


def test_an_operator_may_stop_any_run(tmp_path):
    engine = Engine(AppConfig(model=None, host="0.0.0.0", runs_dir=tmp_path, offline=True, auth=True,
                              operators=("teacher",)))
    engine.runtime.sessions.bind_owner("t", user="teacher")
    engine.runtime.sessions.bind_owner("s", user="student")
    assert engine.runtime.sessions.is_operator("t") and not engine.runtime.sessions.is_operator("s")
    engine.runtime.finetune_jobs._owners["run-x"] = "s"
    with pytest.raises(UserError, match="another browser session"):
        engine.finetune.cancel("run-x", "other")
    assert "not running" in engine.finetune.cancel("run-x", "t")  # let through (there is no such process)


# ---- bounded inputs ---------------------------------------------------------------------------
def test_the_logit_lens_and_patching_refuse_a_text_longer_than_the_model_reads(tmp_path, tiny_models):
    from core.interventions.requests import LensRequest, PatchRequest
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    key = engine.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    long = " ".join(["w1"] * 20001)
    with pytest.raises(UserError, match="reads at most 64"):
        engine.interventions.logit_lens(LensRequest.from_mapping(dict(model=key, text=long)))
    with pytest.raises(UserError, match="reads at most 64"):
        engine.interventions.patch(PatchRequest.from_mapping(dict(model=key, clean=long, corrupt=long, target=" w2")))


def test_sampling_attribution_methods_take_the_tabs_default_seed_0(tmp_path, tiny_models):
    from core.attribution.requests import AttributionRequest
    engine = Engine(AppConfig(model=None, runs_dir=tmp_path, offline=True))
    key = engine.models.load(LoadRequest(model=str(tiny_models["gpt2"]))).key
    for method in ("shapley", "lime", "kernel_shap", "gradient_shap"):
        res = engine.attribution.run(AttributionRequest(model=key, prompt="w1 w2 w3", target=" w4", method=method,
                                                  n_samples=4, seed=0))
        assert res.scores.shape[0] == 3, method
