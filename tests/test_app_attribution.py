"""The Attribution tab through its API."""
import json

import pytest
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure

PROMPT = "w3 = w17 ; w8 = w42 ; w11 = w5 ; w8 ="


def attribute(client, prompt=PROMPT, target="w42", foil="", label="", granularity="segment", sep=" ; ",
              generate=5, n_steps=16, n_samples=8, seed=0, method="ig", model="el-2l-128", hold=True):
    return client.predict(model, prompt, target, foil, label, granularity, sep, generate, n_steps, n_samples,
                          seed, method, hold, api_name="/attribute")


def test_attribute_segments_through_api(client):
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    info, text_html, rows, bars, heat, cmp, csv_path, json_path = attribute(client)
    assert cmp is None  # a new run clears the previous comparison
    assert "Integrated gradients" in info and "completeness delta" in info and "converged" in info
    assert "el-attr-text" in text_html and "w42" in text_html
    data = json.load(open(json_path))
    assert len(data["segments"]) == 4 and data["segments"][-1] == "w8 ="
    assert open(csv_path).read().startswith("index,feature,score")
    # the query is held fixed by default: it scores 0 and the demonstration holding its key wins
    assert data["kept"] == [3] and data["scores"][3] == 0 and "blanked" in info
    assert max(range(3), key=lambda i: data["scores"][i]) == 1
    *_, json_free = attribute(client, hold=False)
    assert "kept" not in json.load(open(json_free))


def test_compare_and_contrast(client):
    fig = client.predict("ablation", "el-2l-128", PROMPT, "w42", "w5", "", "word", " ; ", 5, 16, 8, 0, "ig", True,
                         api_name="/attribute_compare")
    fig = figure(fig)
    a, b = fig["data"]
    assert list(a["x"]) == list(b["x"]) and len(a["x"]) == len(PROMPT.split())  # the same words, both methods
    assert "correlation" in fig["layout"]["title"]["text"]
    assert axis_titles(fig)["yaxis"] == "attribution score" and axis_titles(fig)["xaxis"].startswith("feature")
    with pytest.raises(AppError, match="pick a different second method"):
        client.predict("ig", "el-2l-128", PROMPT, "w42", "", "", "word", " ; ", 5, 16, 8, 0, "ig", True,
                       api_name="/attribute_compare")
    info, *_ = attribute(client, foil="w5", method="ablation", granularity="word")
    assert "log p(target) − log p(foil)" in info


def test_bad_inputs_are_clear(client):
    with pytest.raises(AppError, match="cannot be tokenized"):
        attribute(client, target="zebra")
    with pytest.raises(AppError, match="separator"):
        attribute(client, sep=" | ")
    with pytest.raises(AppError, match="prompt is empty"):
        attribute(client, prompt="")
    with pytest.raises(AppError, match="class label is for sequence classifiers"):
        attribute(client, label="positive")
    info, *_ = attribute(client, method="saliency")  # still working
    assert "Saliency" in info


def test_empty_target_explains_the_greedy_continuation(client):
    info, text_html, rows, *_ , json_path = attribute(client, target="", generate=3, method="saliency",
                                                     granularity="token")
    data = json.load(open(json_path))
    assert len(data["target_tokens"]) == 3 and len(data["matrix"]) == 3
