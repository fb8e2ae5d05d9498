"""The Error analysis tab through its API: run two systems, slice, open an example, tag it; reopen from History in
a new session."""
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import figure

# source, task, limit, train, test, template, label column, choices; then per system: use, model, k, selection
RUN = ["built-in", "recall", 24, None, None, "", "label", ""]
SYSTEMS = [True, "el-2l-128", 0, "first", True, "el-2l-128", 4, "nearest", False, None, 8, "nearest",
           False, None, 2, "nearest"]
SLICE = ["", "", "", "", "", "all", "", ""]  # system, gold, predicted, confidence, length, agreement, text, tag


@pytest.fixture(scope="module")
def session(app_server):
    return Client(app_server[1], verbose=False)


def test_run_slice_open_an_example_and_tag_it(session, app_server):
    engine, url = app_server
    system, gold, pred, status, summary, by_gold, by_conf, confusion, table, csv = session.predict(
        *RUN, *SYSTEMS, api_name="/workspace_run")  # the system/gold/predicted pickers, then the views
    assert "2 system(s) on 24 examples" in status
    assert [r[0] for r in summary["data"]] == ["A: k=0, first", "B: k=4, nearest"]
    assert table["headers"][:3] == ["#", "input", "gold"] and len(table["data"]) == 24
    assert open(csv).read().count("\n") == 25  # header + 24 rows
    out = session.predict("B: k=4, nearest", "", "", "", "", "systems disagree", "", "", api_name="/workspace_slice")
    disagree = out[5]["data"]
    assert 0 < len(disagree) <= 24 and all(r[3].split()[1] != r[4].split()[1] for r in disagree)
    idx = disagree[0][0]
    html, probs, attention, attribution, layer, head = session.predict(idx, None, None, "B: k=4, nearest",
                                                                       api_name="/workspace_example")
    assert f"Example {idx}" in html and "demonstrations drove the answer" in html
    assert (layer, head) == (1, 3)  # the default model's top induction head, preselected
    assert [r[0] for r in probs["data"]] == ["A: k=0, first", "B: k=4, nearest"]
    att, attr = figure(attention), figure(attribution)
    assert f"Layer {layer}, head {head}" in att["layout"]["title"]["text"]
    assert att["data"][0]["z"].shape[0] == att["data"][0]["z"].shape[1] == len(att["data"][0]["x"]) > 12  # the whole k=4 prompt
    assert len(attr["data"][0]["x"]) == 5  # four demonstrations and the query: which one drove the answer
    msg, *views = session.predict(idx, "mislabelled?", "looks mislabelled", *SLICE, api_name="/workspace_tag")
    assert "Tagged example" in msg
    tagged = session.predict("", "", "", "", "", "all", "", "mislabelled?", api_name="/workspace_slice")[5]["data"]
    assert [r[0] for r in tagged] == [idx] and tagged[0][-1] == "mislabelled?"
    # a new browser session finds the run in the History and reopens it with its tag
    hid = next(r.id for r in engine.history.runs() if r.lab == "fewshot")
    other = Client(url, verbose=False)
    *_, status2, summary2, _, _, _, table2, _ = other.predict([hid], api_name="/workspace_open")
    assert summary2["data"] == summary["data"] and "mislabelled?" in {r[-1] for r in table2["data"]}


def test_the_tab_says_what_to_do_first(session):
    fresh = Client(session.src, verbose=False)
    with pytest.raises(AppError, match="Run a comparison or open runs from the History first"):
        fresh.predict(*SLICE, api_name="/workspace_slice")
    with pytest.raises(AppError, match="Name the history run"):
        fresh.predict([], api_name="/workspace_open")
