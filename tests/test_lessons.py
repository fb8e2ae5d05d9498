"""The Lessons lab on the embedded model: each step's claim holds on what it computes, a kept step replays the same
values and the same figure, bad requests get plain refusals, and a teacher prepares a lesson from the CLI."""
import json
import subprocess
import sys

import pytest

from core.engine import Engine
from core.errors import UserError
from core.lessons.catalogue import GLOSSARY, LESSONS
from core.lessons.requests import PrepareRequest, StepRequest
from core.models.types import AppConfig


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(AppConfig(offline=True, model=None, runs_dir=tmp_path_factory.mktemp("runs")))


def step(engine, lesson, name, **kw):
    return engine.lessons.run_step(StepRequest.from_mapping(dict(lesson=lesson, step=name, model="el-2l-128", **kw)))


def test_a_step_is_computed_once_then_replayed_with_the_same_figure(engine):
    from ui.lessons_plots import figure, step_markdown
    first = step(engine, "induction", "roles")
    assert not first.replayed and first.model == "el-2l-128"
    again = step(engine, "induction", "roles")
    assert again.replayed and again.computed_at == first.computed_at
    assert again.outcome == json.loads(json.dumps(first.outcome))
    assert figure(again).to_json() == figure(first).to_json()
    les = next(x for x in LESSONS if x.id == "induction")
    assert "Replayed" in step_markdown(again, les.step("roles")) and "Computed now" in step_markdown(
        first, les.step("roles"))
    redo = step(engine, "induction", "roles", fresh=True)
    assert not redo.replayed and redo.outcome == again.outcome  # the same settings give the same values


def test_the_induction_lesson_finds_the_heads_the_model_needs(engine):
    pattern = step(engine, "induction", "pattern")
    roles = step(engine, "induction", "roles").outcome
    assert [pattern.outcome["layer"], pattern.outcome["head"]] == roles["top"]["induction"][0][:2]
    knock = dict(step(engine, "induction", "knockout").outcome["bars"])
    whole, without, others = knock.values()
    chance = step(engine, "induction", "knockout").outcome["chance"]
    assert whole >= 0.9 and others >= 0.9     # removing two other heads leaves recall as it was
    assert without <= chance + 0.05            # removing the previous-token and induction heads breaks it


def test_attribution_credits_the_demonstration_that_binds_the_key(engine):
    """Both methods give the 2nd demonstration (w8 = w42, the key asked again) the most credit."""
    for name in ("segments", "occlusion"):
        o = step(engine, "which-demo", name).outcome
        demos = o["scores"][:-1]
        assert max(range(len(demos)), key=demos.__getitem__) == 1, (name, demos)


def test_refusals_are_plain(engine, tmp_path):
    with pytest.raises(UserError, match="No lesson 'nope'"):
        StepRequest.from_mapping(dict(lesson="nope", step="x"))
    with pytest.raises(UserError, match="has no step 'x'"):
        StepRequest.from_mapping(dict(lesson="induction", step="x"))
    with pytest.raises(UserError, match="not on 'gpt2'"):
        step_model = StepRequest.from_mapping(dict(lesson="induction", step="roles", model="gpt2"))
        engine.lessons.run_step(step_model)
    with pytest.raises(UserError, match="English model"):
        step(engine, "demonstrations", "calibration")  # calibration needs label words: English only


def test_a_disk_that_cannot_keep_results_still_shows_the_step(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "lessons").write_text("a file where the cache folder would be")
    eng = Engine(AppConfig(offline=True, model=None, runs_dir=runs))
    res = step(eng, "which-demo", "occlusion")
    assert not res.replayed and res.outcome["scores"]
    assert not step(eng, "which-demo", "occlusion").replayed  # nothing kept, computed again


def test_prepare_from_the_cli_then_the_app_replays(tmp_path):
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "core", "prepare-lessons", "--lessons", "which-demo,induction",
                          "--runs-dir", str(runs)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    done = json.loads(out.stdout)
    assert [(s["lesson"], s["step"]) for s in done["steps"]] == [
        ("which-demo", "segments"), ("which-demo", "occlusion"), ("induction", "pattern"), ("induction", "roles"),
        ("induction", "knockout")]
    eng = Engine(AppConfig(offline=True, model=None, runs_dir=runs))
    kept = eng.lessons.prepare(PrepareRequest.from_mapping(dict(lessons="induction")))
    assert all(r.replayed for r in kept) and len(kept) == 3
    assert "el-2l-128" not in eng.models.loaded_keys()  # a replay loads no model


def test_every_step_has_words_and_a_tab_and_the_glossary_explains_the_terms():
    from ui.app import TABS
    tab_ids = {t for _, t, _ in TABS}
    for les in LESSONS:
        assert les.intro and les.steps
        for s in les.steps:
            assert s.say and s.notice and s.settings and s.tab in tab_ids, (les.id, s.id)
    for term in ("induction head", "previous-token head", "sink", "entropy", "Brier score", "acc_norm", "ICL score",
                 "completeness delta", "baseline", "calibration", "chance", "function vector"):
        assert term in GLOSSARY
