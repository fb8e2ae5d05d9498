"""The Lessons tab through its API, as two students of one class: the first computes a step, the second replays
it (marked, with when it was computed) and gets the same picture."""
import pytest
from gradio_client import Client

from conftest import axis_titles, figure


def test_a_step_computed_by_one_student_is_replayed_for_the_next(client, app_server):
    text, plot = client.predict("el-2l-128", False, api_name="/lesson_induction_knockout")
    assert "Notice:" in text and ("Computed now" in text or "Replayed" in text)
    fig = figure(plot)
    bars = fig["data"][0]
    assert list(bars["x"])[0] == "the whole model" and len(bars["x"]) == 3
    assert bars["y"][0] >= 0.9 and bars["y"][1] <= 0.15 and bars["y"][2] >= 0.9
    assert axis_titles(fig)["yaxis"] == "accuracy"
    other = Client(app_server[1], verbose=False)  # another browser session
    text2, plot2 = other.predict("el-2l-128", False, api_name="/lesson_induction_knockout")
    assert "Replayed: computed" in text2 and "el-2l-128" in text2
    assert list(figure(plot2)["data"][0]["y"]) == list(bars["y"])


def test_the_pattern_step_draws_the_top_induction_head(client):
    text, plot = client.predict("el-2l-128", False, api_name="/lesson_induction_pattern")
    roles, _ = client.predict("el-2l-128", False, api_name="/lesson_induction_roles")
    head = text.split("**")[1]  # "L1.H3"
    assert f"top induction head **{head}**" in roles
    fig = figure(plot)
    assert fig["data"][0]["type"] == "heatmap" and len(fig["data"][0]["y"]) == 21  # <bos> + 10 words twice
    assert f"Layer {head[1]}, head {head.split('.H')[1]}" in fig["layout"]["title"]["text"]
    assert axis_titles(fig) == {"xaxis": "key (attended to)", "yaxis": "query (attending)"}


def test_a_step_for_english_models_says_so_on_the_toy_model(client):
    text, plot = client.predict("el-2l-128", False, api_name="/lesson_demonstrations_calibration")
    assert "runs on an English model" in text and plot is None


def test_a_model_outside_the_lessons_list_is_refused_and_the_tab_keeps_working(client):
    """The picker offers only the lessons' models; a client sending another is refused (by gradio's check of the
    choices; the engine's own plain refusal is in tests/test_lessons.py) and the next call works."""
    with pytest.raises(Exception):
        client.predict("/etc/passwd", False, api_name="/lesson_which_demo_segments")
    text, _ = client.predict("el-2l-128", False, api_name="/lesson_which_demo_segments")
    assert "demo 2 (w42)" in text


def test_terms_are_explained_where_they_are_shown(client):
    """Each tab states its terms in a line from the glossary the Lessons tab lists in full."""
    shown = " ".join(str(c.get("props", {}).get("value", "")) for c in client.config["components"]
                     if "el-terms" in (c.get("props", {}).get("elem_classes") or []))
    for term in ("acc_norm", "Brier score", "calibration", "ICL score", "completeness delta", "baseline",
                 "activation patching", "logit lens", "function vector", "LoRA"):
        assert f"**{term}**:" in shown, term
