"""The Tuning studies and Tag words tabs through their API (gradio_client), two sessions apart."""
import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure


def test_tag_a_test_sentence_then_explain_a_word_and_draw_attention(client, ner_run):
    html, words, sentence = client.predict(ner_run, "ner", 5, "", api_name="/ner_tag")
    assert "predicted" in html and "gold" in html and "Test sentence 5" in html
    assert words["headers"] == ["word #", "word", "predicted", "confidence", "gold", "right"]
    assert sentence == " ".join(r[1] for r in words["data"])
    md, plot = client.predict(ner_run, sentence, 1, "ig", api_name="/ner_explain")
    assert "Integrated gradients" in md and "converged" in md
    fig = figure(plot)
    (bars,) = fig["data"]
    assert [x.split(":", 1)[1] for x in bars["x"]] == sentence.split()  # one bar per word of the sentence
    assert axis_titles(fig)["yaxis"].startswith("attribution score") and fig["layout"]["title"]["text"]
    heat = figure(client.predict(ner_run, sentence, 1, 2, api_name="/ner_attention"))
    (h,) = heat["data"]
    assert h["z"].shape[0] == h["z"].shape[1] == len(h["x"]) >= len(sentence.split()) and h["x"][0] == "0:[CLS]"
    assert np.allclose(h["z"].sum(1), 1, atol=1e-3)  # each query's attention is a distribution
    html, words, _ = client.predict(ner_run, "ner", 0, "Maria met Kofi in Oslo .", api_name="/ner_tag")
    assert "gold" not in html and len(words["data"]) == 6  # a typed sentence has no gold tags


def test_score_the_test_split(client, ner_run):
    md, scores, confusion, errors = client.predict(ner_run, "ner", api_name="/ner_report")
    assert "entity F1" in md and "300 test sentences" in md
    assert scores["data"][0][0] == "all entities" and {r[0] for r in scores["data"]} >= {"all entities"}
    assert confusion["headers"][0] == "gold \\ predicted" and "O" in confusion["headers"]
    assert errors["headers"] == ["sentence #", "wrong words", "sentence", "gold → predicted"]


def test_tagging_refuses_what_is_not_a_token_classifier(client, ner_run):
    with pytest.raises(AppError, match="needs a token classifier"):
        client.predict("el-2l-128", "ner", 0, "", api_name="/ner_tag")
    html, words, tokens = client.predict("", "ner", 0, "", api_name="/ner_tag")  # nothing picked: one at hand
    assert "No token classifier here yet" not in html and tokens and words["data"]


@pytest.mark.slow
def test_methods_study_streams_to_the_end_and_is_watched_from_another_session(client, app_server):
    engine, url = app_server
    out = client.predict("el-2l-128", "classification", "wordgroups", ["ia3", "prefix"], 6, 32,
                         "ia3=3e-2", 8, 8, api_name="/study_methods")
    sid, status, table = out[0], out[1], out[2]
    assert "2 of 2 runs finished" in status
    assert [r[0] for r in table["data"]] == ["ia3", "prefix"] and all(r[1] == "finished" for r in table["data"])
    other = Client(url, verbose=False)  # a second browser finds it and sees the same
    watched = other.predict(sid, api_name="/study_watch")
    assert watched[0] == sid and watched[2]["data"] == table["data"]
    assert sid in engine.studies.ids()


@pytest.mark.slow
def test_a_prompt_is_worth_how_many_examples(client, app_server):
    # preset-like values on the embedded model: prompting at chance, fine-tuning learns
    start = client.predict("el-2l-128", "wordgroups", "classification", "lora", "3e-3", 32, 64, 32, 8, "8,32",
                           "0,2", 1, api_name="/study_data_efficiency")
    sid = start[0]
    out = client.predict(sid, api_name="/study_watch")
    assert "2 of 2 runs finished" in out[1] and "Prompting measured at 2" in out[1]
    table = out[5]
    assert [r[0] for r in table["data"]] == ["fine-tuning", "fine-tuning", "prompting", "prompting"]
    # a value the form itself refuses is refused as the call joins the queue (HTTP 400 with the reason)
    with pytest.raises(httpx.HTTPStatusError) as err:
        client.predict("el-2l-128", "wordgroups", "classification", "lora", "3e-3", 32, 64, 32, 0, "8", "0", 1,
                       api_name="/study_data_efficiency")
    assert err.value.response.status_code == 400 and "minimum value 1" in err.value.response.text
