"""Emergence: sweeps over checkpoints and sizes, heads over training, the CLI, the tab."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.emergence.series import Cache, heads_over_training, series_points, sweep_series
from core.errors import UserError
from core.fewshot.types import FewShotConfig
from core.tasks import load_builtin

ROOT = Path(__file__).resolve().parent.parent


def cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def emergence_points(tmp_path, *args) -> list[dict]:
    """``python -m core emergence --checkpoints default --task recall ARGS``: its points."""
    out = tmp_path / "em.json"
    res = cli("emergence", "--checkpoints", "default", "--task", "recall", *args, "--out", str(out))
    assert res.returncode == 0, res.stderr[-1500:]
    return json.loads(out.read_text())["points"]


def test_recall_appears_over_training_and_the_continuous_metric_moves_first(tmp_path):
    points = emergence_points(tmp_path, "--k", "8", "--seeds", "2")
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and len(steps) >= 6 and steps[0] == 0
    assert {p["n_params"] for p in points} == {462976}
    acc = [p["metrics"]["accuracy"] for p in points]
    lp = [p["metrics"]["gold_logprob"] for p in points]
    assert set(points[0]["metrics"]) == {"accuracy", "gold_logprob", "edit_distance", "brier"}
    assert acc[0] < 0.2 and acc[-1] > 0.6  # near chance first, learnt last
    jump = int(np.argmax(np.diff(acc)))  # the step where exact match jumps ...
    assert lp[jump] > lp[0] + 0.5        # ... gold log-prob had already been rising before it


def test_heads_over_training_shows_the_induction_head_forming(tmp_path):
    out = tmp_path / "hot.json"
    res = cli("heads-over-training", "--checkpoints", "default", "--out", str(out))
    assert res.returncode == 0, res.stderr[-1500:]
    d = json.loads(out.read_text())
    assert np.asarray(d["induction"]).shape == (len(d["steps"]), 2, 4)
    assert np.asarray(d["previous_token"]).shape == np.asarray(d["induction"]).shape
    assert d["icl_score"][-1] < d["icl_score"][0] - 1.0  # late tokens far easier than early ones by the end
    assert max(map(np.max, d["previous_token"][1:])) > 0.5  # a previous-token head forms
    top = [float(np.max(a)) for a in d["induction"]]
    assert top[0] < 0.2 and top[-1] >= 0.5  # ... and an induction head: none at step 0, one at the end
    jump = next(i for i, t in enumerate(top) if t >= 0.5)
    assert 0 < jump < len(top) - 1  # it appears mid-training, so the curve shows the change


def test_tasks_cli_and_series_errors():
    res = cli("tasks")
    tasks = {t["name"]: t for t in json.loads(res.stdout)}
    assert tasks["recall"]["kind"] == "classification" and tasks["addition"]["kind"] == "generation"
    assert tasks["wordgroups"]["n_train"] == 800
    with pytest.raises(UserError, match="revisions"):
        series_points(None, "gpt2")
    pts = series_points(None, "EleutherAI/pythia-70m")
    assert pts[0].revision == "step0" and pts[-1].step == 143000
    assert [p.model for p in series_points(["el-1l-64", "el-2l-128"])] == ["el-1l-64", "el-2l-128"]


def test_sizes_series_and_cache_make_replots_free(tmp_path):
    task = load_builtin("recall")
    cache = Cache(tmp_path / "cache.json")
    pts = series_points(["el-1l-64", "el-2l-128"])
    first = sweep_series(pts, task, FewShotConfig(k=8, selection="random", limit=24), [0], cache=cache)
    assert first[0].n_params < first[1].n_params
    assert first[1].metrics["accuracy"] > first[0].metrics["accuracy"]  # the 2-layer model recalls, 1-layer not
    again = sweep_series(pts, task, FewShotConfig(k=8, selection="random", limit=24), [0],
                         cache=Cache(tmp_path / "cache.json"), borrow=_no_loads)
    assert [r.metrics for r in again] == [r.metrics for r in first]


def _no_loads(spec):
    raise AssertionError(f"{spec.model}@{spec.revision} was loaded although its results were kept")


def test_heads_over_training_keeps_one_capture_per_checkpoint(tmp_path, monkeypatch):
    from core.emergence import series
    captures = []
    real = series.head_scores
    monkeypatch.setattr(series, "head_scores", lambda handle: captures.append(handle.info.step) or real(handle))
    pts = series_points(None, "default")[::4]
    first = heads_over_training(pts, cache=Cache(tmp_path / "c.json"))
    assert len(captures) == len(pts)
    again = heads_over_training(pts, cache=Cache(tmp_path / "c.json"), borrow=_no_loads)  # e.g. after a restart
    assert again.to_dict() == first.to_dict()
    ablated = heads_over_training(pts, cache=Cache(tmp_path / "c.json"), ablate="1.1")
    assert len(captures) == len(pts)  # the ICL score was measured again with the head ablated; the roles kept
    assert ablated.induction == first.induction and ablated.icl_score != first.icl_score
    assert heads_over_training(pts).to_dict() == first.to_dict()  # the same as computed without a cache


def test_kept_results_of_a_local_folder_follow_its_weights(tmp_path, tiny_models):
    """A folder keeps its name while a run writes new weights into it: what was kept no longer applies."""
    import os
    import shutil
    from core.emergence.series import Point, weights_stamp
    folder = tmp_path / "m"
    shutil.copytree(tiny_models["gpt2"], folder)
    point, cache = Point(str(folder)), Cache(tmp_path / "c.json")
    heads_over_training([point], cache=cache)
    heads_over_training([point], cache=cache, borrow=_no_loads)  # unchanged: kept
    key = Cache.key(point, load_builtin("recall"), FewShotConfig(k=2), 0)
    os.utime(folder / "model.safetensors", ns=(10**9, 10**9))  # new weights written under the same name
    assert Cache.key(point, load_builtin("recall"), FewShotConfig(k=2), 0) != key
    with pytest.raises(AssertionError, match="was loaded"):
        heads_over_training([point], cache=cache, borrow=_no_loads)
    assert weights_stamp(Point("default", "step0")) == []  # embedded checkpoints are fixed by name


def test_live_series_from_a_training_folder(tmp_path):
    res = cli("train-tiny", "--preset", "live", "--steps", "60", "--out", str(tmp_path),
              "--progress", str(tmp_path / "p.jsonl"))
    assert res.returncode == 0, res.stderr[-1500:]
    events = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert events[0]["step"] == 0 and {"train_loss", "icl_score", "top_induction", "recall_accuracy"} <= set(events[-1])
    pts = series_points(None, str(tmp_path / "live"))
    assert [p.step for p in pts] == [0, 60]
    hot = heads_over_training(pts)
    assert hot.steps == [0, 60]


def test_models_with_other_tokenizers_and_a_missing_point(tmp_path, tiny_models):
    """Each model scores the same text with its own tokenizer; a missing point is named and skipped."""
    task = load_builtin("recall")
    pts = series_points([str(tiny_models["gpt2"]), "el-2l-128", str(tmp_path / "nope")])
    res = sweep_series(pts, task, FewShotConfig(k=4, selection="random", limit=12), [0])
    assert res[0].error is None and res[1].error is None
    assert res[0].n_params != res[1].n_params and res[0].metrics["accuracy"] is not None
    assert "nope" in res[2].error and res[2].metrics["accuracy"] is None
    missing = series_points(None, "default")[:2] + [series_points(None, "default")[0].__class__("el-2l-128", "step7")]
    hot = heads_over_training(missing)
    assert len(hot.steps) == 2 and "step7" in hot.errors[0]


def test_recall_at_k4_goes_from_chance_to_learnt(tmp_path):
    points = emergence_points(tmp_path, "--k", "4", "--selection", "nearest", "--limit", "24")
    chance = points[0]["chance"]
    assert abs(points[0]["metrics"]["accuracy"] - chance) < 0.1 and points[-1]["metrics"]["accuracy"] >= 0.9
    res = cli("emergence", "--checkpoints", "default", "--task", "recall", "--k", "4", "--selection", "manual")
    assert res.returncode == 2 and "Selection must be one of" in res.stderr  # the request's own check


def test_live_run_streams_and_stops(tmp_path):
    from core.emergence.live import LiveRuns
    live = LiveRuns(tmp_path)
    live.start(steps=400)
    deadline = time.time() + 120
    while not live.events():  # the step-0 evaluation
        assert time.time() < deadline and live.state() == "running", (live.state(), live.events())
        time.sleep(0.5)
    with pytest.raises(UserError, match="already training"):
        live.start()
    live.stop()
    live.proc.wait(30)
    assert live.state().startswith("stopped") and live.events()[0]["step"] == 0


def test_the_live_view_says_step_n_of_m_and_time_left_on_axes_of_the_whole_run():
    """(issue 29: no 'step N of M', no ETA, an x axis covering only the steps done)"""
    from ui.emergence_plots import eta_s, live_figure, live_status
    events = [{"step": 0, "elapsed_s": 2.0, "train_loss": None, "recall_accuracy": 0.1},
              {"step": 100, "elapsed_s": 12.0, "train_loss": 3.2, "recall_accuracy": 0.1},
              {"step": 200, "elapsed_s": 22.0, "train_loss": 3.0, "recall_accuracy": 0.2}]
    assert eta_s(events, 1000) == pytest.approx(80.0)  # 800 steps left at 0.1 s a step
    assert eta_s(events[:1], 1000) is None
    line = live_status("running", events, "live-x", None, 1000)
    assert "step 200 of 1,000" in line and "about 80 s left" in line
    assert "left" not in live_status("finished", events, "live-x", None, 1000)
    fig = live_figure(events, 1000)
    assert all(fig.layout[f"xaxis{i}"].range[1] >= 1000 for i in ("", "2", "3", "4"))
