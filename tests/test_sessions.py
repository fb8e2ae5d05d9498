"""Several people on one server: jobs, cancel and exports belong to one session and one tab."""
import json
import threading

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.engine import Engine
from core.errors import Cancelled
from core.models.types import AppConfig

from conftest import wait_until
from fewshot_form import TASK
from fewshot_form import configs as form_configs
CONFIG = dict(use=True, model="el-2l-128", k=4, selection="nearest", seed=0, order="as_chosen",
              perturb="gold", flip=0.5, calibrate=False, per_query=True, variant="")


def configs(*overrides):
    return form_configs(CONFIG, *overrides)


def long_sweep(client):
    """A few-shot sweep with a prefix per query: long enough to be cancelled while it runs."""
    return client.submit(*TASK, *configs(dict()), "", 0, "k", ",".join(map(str, range(0, 13))),
                         ",".join(map(str, range(8))), ["accuracy"], api_name="/fewshot_sweep")


@pytest.fixture(scope="module")
def two(app_server):
    engine, url = app_server
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    return engine, a, b


def test_cancel_in_one_session_leaves_the_other_running(two):
    engine, a, b = two
    job = long_sweep(a)
    wait_until(lambda: engine.runtime.jobs.active(a.session_hash), "A's sweep to start")
    b.predict(api_name="/cancel_fewshot")             # B's Cancel: not A's run
    a.predict(api_name="/cancel_attribution")         # A's Cancel in another tab: not this run either
    assert not [j for j in engine.runtime.jobs.active(a.session_hash) if j.should_stop()]
    a.predict(api_name="/cancel_fewshot")             # A's own Cancel in this tab stops it
    with pytest.raises(AppError, match="cancelled"):
        job.result()
    wait_until(lambda: not engine.runtime.jobs.active(a.session_hash), "A's job to be dropped")


def test_a_session_is_served_while_another_watches_a_training_run(two):
    engine, a, b = two
    from test_app_finetune import widgets
    watch = a.submit(*widgets(epochs=60), api_name="/finetune_start")  # streams until the run ends
    wait_until(lambda: len(watch.outputs()) >= 1, "the first streamed update")
    name = watch.outputs()[-1][0]
    other = b.submit(name, api_name="/finetune_watch")  # a second watcher does not wait for the first
    wait_until(lambda: len(other.outputs()) >= 1, "B's first update")
    out = b.predict("el-2l-128", 0, 0, "w1 w2 w3 w1 w2 w3", "", 0, 256, api_name="/attention")
    assert "head" in json.dumps(out[1]).lower() and not watch.done()  # served while A's run is being watched
    with pytest.raises(AppError, match="another browser session"):
        b.predict(name, api_name="/finetune_cancel")  # B cannot stop A's run
    a.predict(name, api_name="/finetune_cancel")
    wait_until(watch.done, "the watched run to end")
    assert engine.finetune.status(name).state == "cancelled"


def test_each_session_gets_its_own_export_files(two):
    engine, a, b = two
    b.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    out_a = a.predict("el-2l-128", 0, 1, "w1 w2 w3 w1 w2 w3", "", 0, 256, api_name="/attention")
    out_b = b.predict("el-2l-128", 0, 1, "w4 w5 w6 w4 w5 w6", "", 0, 256, api_name="/attention")
    csv_a, csv_b = out_a[4], out_b[4]
    assert csv_a != csv_b and "w1" in open(csv_a).read() and "w4" in open(csv_b).read()
    folder_a = engine.runtime.exports.folder(a.session_hash)
    engine.end_session(a.session_hash)  # the browser left: its files go, the other session's stay
    assert not folder_a.exists() and engine.runtime.exports.folder(b.session_hash).exists()


def test_configuration_labels_are_said_once(two):
    _, a, _ = two
    note, _plot, summary, bias, table, prompts, *_ = a.predict(
        *TASK, *configs(dict(k=2, selection="first", per_query=False), dict(k=0, selection="first",
                                                                           per_query=False)),
        "", 6, api_name="/fewshot_run")
    names = [r[0] for r in summary["data"]]
    assert names == ["A: k=2, first", "B: k=0, first"], names
    assert "A: A" not in prompts and "<h3>A: k=2, first</h3>" in prompts


def test_demonstration_attribution_uses_the_run_s_own_checkpoint(two):
    engine, a, _ = two
    a.predict("el-2l-128", "step0", "auto", "auto", "auto", False, api_name="/load_model")
    a.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")  # step0 is not the latest
    a.predict(*TASK, *configs(dict(model="el-2l-128@step0", k=3, selection="first", per_query=False)),
              "", 4, api_name="/fewshot_run")
    fig = a.predict(0, api_name="/fewshot_attribute")
    got = _values(json.loads(fig["plot"])["data"][0]["y"])
    runs = engine.fewshot.run(_request(dict(model="el-2l-128@step0", k=3, selection="first", per_query=False), 4))
    ref = engine.attribution.example(runs[0], 0)
    assert runs[0].model_key == "el-2l-128@step0"
    assert got == pytest.approx(ref.scores.tolist(), abs=1e-6)
    engine.models.unload("el-2l-128@step0")  # let go to make room: the press loads it again, the same answer
    again = a.predict(0, api_name="/fewshot_attribute")
    assert _values(json.loads(again["plot"])["data"][0]["y"]) == pytest.approx(got, abs=1e-6)
    assert "el-2l-128@step0" in engine.models.loaded_keys()


def _values(arr):
    """A plotly array as numbers (plotly may send it as base64 with a dtype)."""
    if isinstance(arr, dict):
        import base64
        import numpy as np
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"]).tolist()
    return arr


def _request(config: dict, limit: int):
    from core.fewshot.requests import FewShotRequest
    fields = ["source", "name", "train_file", "test_file", "label_column", "choices", "instruction",
              "input_template", "target_delimiter", "fewshot_delimiter", "hub_id"]
    return FewShotRequest.from_mapping({"task": dict(zip(fields, TASK)), "configs": [dict(CONFIG, **config)],
                                        "limit": limit})


# ---- the engine's jobs, without a server ------------------------------------------------

def test_a_cancel_pressed_while_queued_is_honoured(tmp_path):
    engine = Engine(AppConfig(runs_dir=tmp_path, model=None))
    mine = engine.submit("s1", "fewshot")    # the button was pressed (or an API call sent); it waits in the queue
    theirs = engine.submit("s2", "fewshot")  # another person's run waits too
    assert engine.cancel("s1", "fewshot") == 1
    with pytest.raises(Cancelled):
        with engine.job("s1", "fewshot", job_id=mine):
            pass
    with engine.job("s2", "fewshot", job_id=theirs) as job:  # not theirs
        assert not job.should_stop()
    with engine.job("s1", "fewshot") as job:  # the next run of s1 starts clean; finished jobs are dropped
        assert not job.should_stop() and job.job_id
    assert engine.runtime.jobs.active() == []


def test_job_ids_are_unique_per_call(tmp_path):
    engine = Engine(AppConfig(runs_dir=tmp_path, model=None))
    ids = set()
    barrier = threading.Barrier(4)

    def one():
        barrier.wait()
        with engine.job("s", "attention") as job:
            ids.add(job.job_id)
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 4


def test_the_page_can_answer_while_the_default_model_loads(tmp_path):
    from core.errors import UserError
    engine = Engine(AppConfig(runs_dir=tmp_path, model="default"))
    engine.models.expect_default()  # app.py: before the page is built
    assert engine.models.default_status().startswith("Loading the default model (el-2l-128)")
    with pytest.raises(UserError, match="still loading"):
        engine.models.resolve_key(None, wait_s=0)
    engine.models.load_default_in_background().join()  # after the page answers
    assert engine.models.default_status() is None and engine.models.resolve_key(None) == "el-2l-128"


def test_a_series_sweep_borrows_its_points_from_the_registry(tmp_path, monkeypatch):
    """Each point is loaded through the registry (under its budget and LRU) and given back after."""
    from core.emergence import series
    from core.emergence.requests import SweepSeriesRequest
    engine = Engine(AppConfig(runs_dir=tmp_path, model="default"))
    engine.models.load_default()
    seen, score = [], series.run_fewshot

    def spy(handle, *a, **kw):  # what the registry holds while a point is scored
        seen.append(tuple(engine.models.loaded_keys()))
        return score(handle, *a, **kw)
    monkeypatch.setattr(series, "run_fewshot", spy)
    engine.emergence.sweep(SweepSeriesRequest.from_mapping(
        dict(source="models", models="el-1l-64,el-2l-128", task="recall", k=2, seeds=1, limit=6)))
    assert ("el-2l-128", "el-1l-64") in seen          # the point was in the registry while it was scored
    assert engine.models.loaded_keys() == ["el-2l-128"]      # ... and given back; the person's own model stays


def test_scoring_a_classifier_leaves_the_shared_tokenizer_as_it_was(tiny_models):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import Template, task_from_tables
    import pandas as pd
    h = load_model(ModelSpec(str(tiny_models["bert_cls"])))
    h.tokenizer.padding_side = "left"
    rows = pd.DataFrame({"text": ["good movie", "bad movie"] * 4, "label": ["positive", "negative"] * 4})
    labels = list(h.model.config.id2label.values())
    task = task_from_tables(rows.assign(label=[labels[i % 2] for i in range(8)]), rows.assign(
        label=[labels[i % 2] for i in range(8)]), Template("{text}"), "label", labels)
    run_fewshot(h, task, FewShotConfig(k=0))
    assert h.tokenizer.padding_side == "left"
