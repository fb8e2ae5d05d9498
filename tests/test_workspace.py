"""The error-analysis workspace: systems side by side on the same examples, slices, confusion, per-slice accuracy,
one example opened with its attention and attribution, tags kept in the history; runs reopened and compared."""
import pytest

from core.engine import Engine
from core.errors import UserError
from core.fewshot.requests import FewShotRequest
from core.history import workspace as wsp
from core.models.requests import LoadRequest
from core.models.types import AppConfig


def request(*configs, task="recall", limit=24) -> FewShotRequest:
    from core.tasks import load_builtin
    t = load_builtin(task).template
    return FewShotRequest.from_mapping({
        "task": {"source": "built-in", "name": task, "input_template": t.input, "instruction": t.instruction,
                 "target_delimiter": t.target_delimiter, "fewshot_delimiter": t.fewshot_delimiter},
        "configs": [dict(model=m, k=k, selection=sel) for m, k, sel in configs], "limit": limit})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = Engine(AppConfig(model=None, runs_dir=tmp_path_factory.mktemp("runs"), offline=True))
    e.models.load(LoadRequest(model="default"))
    return e


@pytest.fixture(scope="module")
def ws(engine):
    return engine.workspace.run(request(("el-2l-128", 0, "first"), ("el-2l-128", 4, "nearest")))


def test_one_table_of_examples_with_every_systems_answer(ws):
    assert ws.systems == ["A: k=0, first", "B: k=4, nearest"] and len(ws.table) == 24
    row = ws.table.iloc[0]
    for s in ws.systems:
        assert {f"{s}|prediction", f"{s}|confidence", f"{s}|correct"} <= set(ws.table.columns)
        assert 0 < row[f"{s}|confidence"] <= 1
    summary = wsp.summary(ws, ws.table)
    assert summary["B: k=4, nearest"]["accuracy"] > summary["A: k=0, first"]["accuracy"]  # recall needs the demos
    assert summary["A: k=0, first"]["delta_vs_first"] == 0
    assert all(h for h in ws.history_ids)  # recorded


def test_slices_confusion_and_per_slice_accuracy(ws):
    t = ws.table
    a, b = ws.systems
    disagree = wsp.slice_rows(ws, wsp.SliceRequest(agreement="systems disagree"))
    assert len(disagree) == int((t[f"{a}|prediction"] != t[f"{b}|prediction"]).sum())
    wrong = wsp.slice_rows(ws, wsp.SliceRequest(system=b, agreement="some wrong"))
    assert all(not (r[f"{a}|correct"] and r[f"{b}|correct"]) for _, r in wrong.iterrows())
    gold = t["gold"].iloc[0]
    assert set(wsp.slice_rows(ws, wsp.SliceRequest(gold=gold))["gold"]) == {gold}
    pred = t[f"{b}|prediction"].iloc[0]
    assert set(wsp.slice_rows(ws, wsp.SliceRequest(system=b, predicted=pred))[f"{b}|prediction"]) == {pred}
    conf = wsp.slice_rows(ws, wsp.SliceRequest(system=b, confidence="≥ 0.9"))
    assert (conf[f"{b}|confidence"] >= 0.9).all()
    short = wsp.slice_rows(ws, wsp.SliceRequest(length="short"))
    assert set(short["length_bin"]) <= {"short"}
    word = t["input"].iloc[3].split()[0]
    assert all(word.lower() in x.lower() for x in wsp.slice_rows(ws, wsp.SliceRequest(text=word))["input"])
    labels, mat = wsp.confusion(ws, t, b)
    assert mat.sum() == len(t) and mat.trace() == int(t[f"{b}|correct"].sum())
    by_len = wsp.accuracy_by(ws, t, "length_bin")
    assert by_len["n"].sum() == len(t) and set(by_len.columns) >= {"n", *ws.systems}
    by_conf = wsp.accuracy_by(ws, t, b)
    assert by_conf["n"].sum() == len(t)
    with pytest.raises(UserError, match="Confidence bins"):
        wsp.SliceRequest(confidence="high").check()


def test_an_example_opens_with_its_attention_and_attribution(engine, ws):
    d = engine.workspace.example(ws, int(ws.table["index"].iloc[2]), ws.systems[1])
    assert d.head_note.startswith("the model's top induction head") and (d.layer, d.head) == (1, 3)
    assert d.attention.head(d.layer, d.head).shape[0] == len(d.attention.tokens)
    assert d.attribution.method == "ablation" and d.attribution.granularity == "segment"
    assert len(d.attribution.segments) == 5  # four demonstrations and the query
    assert set(d.probabilities) == set(ws.systems) and abs(sum(d.probabilities[ws.systems[1]]) - 1) < 1e-6
    z = engine.workspace.example(ws, int(ws.table["index"].iloc[2]), ws.systems[0], layer=0, head=2)
    assert z.head_note == "chosen" and z.attribution.granularity == "word"  # k=0: no demonstrations: words


def test_tags_are_kept_in_the_history_and_slice_the_table(engine, ws):
    idx = [int(i) for i in ws.table["index"].iloc[:3]]
    engine.workspace.tag(ws, idx, "needs world knowledge", "three to look at")
    tags = engine.workspace.tags(ws)
    assert all("needs world knowledge" in tags[i] for i in idx)
    sliced = wsp.slice_rows(ws, wsp.SliceRequest(tag="needs world knowledge"), tags)
    assert sorted(sliced["index"]) == sorted(idx)
    assert {e.idx for e in engine.runtime.history.examples(ws.history_ids[0], "needs world knowledge")} == set(idx)
    with pytest.raises(UserError, match="Type the tag"):
        engine.workspace.tag(ws, idx, "  ")


def test_history_runs_reopen_into_a_workspace_and_compare(engine, ws):
    # (this ran on el-2l-128 while it said el-1l-64 before a name that is not loaded was refused)
    engine.models.load(LoadRequest(model="el-1l-64"))
    other = engine.workspace.run(request(("el-1l-64", 4, "nearest")))
    assert other.runs[0].model_key == "el-1l-64"
    both = engine.workspace.open([ws.history_ids[0], other.history_ids[0]])
    assert len(both.systems) == 3 and len(both.table) == 24
    assert both.runs[0].examples[0].prompt == ws.runs[0].examples[0].prompt
    s = wsp.summary(both, both.table)
    assert s[both.systems[2]]["delta_vs_first"] == pytest.approx(s[both.systems[2]]["accuracy"]
                                                                 - s[both.systems[0]]["accuracy"])
    with pytest.raises(UserError, match="the same test rows"):
        engine.workspace.open([ws.history_ids[0], engine.workspace.run(request(("el-2l-128", 0, "first"),
                                                                               limit=10)).history_ids[0]])


def test_every_lab_records_with_the_weights_that_made_it(engine, ws, tmp_path):
    from core.attention.requests import AttentionRequest
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    rec = engine.runtime.history.get(ws.history_ids[0])
    sha = rec.request["weights_sha256"]["el-2l-128"]
    assert len(sha) == 64
    engine.attention.run(AttentionRequest(model="el-2l-128", text="w1 w2 w1 w2", layer=1, head=3))
    att = engine.history.runs(lab="attention")[0]
    assert att.request["weights_sha256"]["el-2l-128"] == sha and att.summary["head"] == 3
    stored = engine.runtime.history.result(att.id)
    assert len(stored["attention"]) == len(stored["tokens"])  # the drawn map, compactly
    spec = FinetuneSpec(model="default", data=DataSpec(task="wordgroups", max_eval=20), method="ia3", max_steps=2,
                        batch_size=16)
    metrics = train_run(spec, engine.config.runs_dir / "ft-recorded")
    ft = engine.history.runs(lab="finetune")[0]
    assert ft.name == "ft-recorded" and ft.summary["eval_accuracy"] == metrics["eval_accuracy"]
    assert len(ft.request["weights_sha256"]["saved model"]) == 64
    rows = engine.runtime.history.examples(ft.id)  # every held-out example's answer, as the final evaluation saw it
    assert len(rows) == 20 and sum(r.correct for r in rows) / 20 == metrics["eval_accuracy"]
    assert all(r.prediction in ("w0", "w1") and len(r.logprobs) == 2 for r in rows)


def test_a_clicked_row_opens_the_system_that_got_it_wrong(ws):
    """(issue 29: clicking the row where one system was wrong opened the other, which was right)"""
    from ui.workspace_plots import examples_table, system_for_click
    shown = examples_table(ws, ws.table)
    a, b = ws.systems
    cols = list(shown.columns)
    wrong_a = next(i for i in range(len(shown)) if shown.iloc[i][a].startswith("✗") and shown.iloc[i][b].startswith("✓"))
    assert system_for_click(ws, shown, wrong_a, cols.index("input"), b) == a   # the one that got it wrong
    assert system_for_click(ws, shown, wrong_a, cols.index(b), a) == b          # a system's own column: that one
    right = [i for i in range(len(shown)) if all(shown.iloc[i][s].startswith("✓") for s in ws.systems)]
    if right:
        assert system_for_click(ws, shown, right[0], cols.index("gold"), b) == b  # nothing wrong: as picked
