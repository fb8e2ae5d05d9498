"""The Attention tab through its API."""
import numpy as np
import pytest
from gradio_client.exceptions import AppError

from conftest import axis_titles, figure

TEXT = "w5 w9 w2 w71 w33 w8 w5 w9 w2 w71 w33 w8"


def attention(client, text=TEXT, layer=1, head=0, pair="", start=0, size=256, model="el-2l-128"):
    return client.predict(model, layer, head, text, pair, start, size, api_name="/attention")


def test_head_layer_and_mean_figures(client):
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")
    notice, head_fig, grid_fig, mean_fig, csv_path, html_path, model = attention(client)
    assert "13 tokens" in notice
    for fig in (head_fig, grid_fig, mean_fig):
        assert fig["type"] == "plotly" or "plot" in fig  # a serialised plotly figure
    assert open(csv_path).read().startswith("query_pos,query_token,key_pos,key_token,attention")
    assert "<html" in open(html_path).read()[:200].lower()


def test_long_input_shows_a_window(client):
    long_text = " ".join(f"w{i % 100}" for i in range(60))
    notice, *_ = attention(client, text=long_text, start=20, size=16)
    assert "61 tokens" in notice and "20–35" in notice


def test_bad_inputs_are_clear(client):
    with pytest.raises(AppError, match="empty"):
        attention(client, text="  ")
    with pytest.raises(AppError, match="out of range"):
        attention(client, layer=7)
    with pytest.raises(AppError, match="out of range"):
        attention(client, head=99)
    with pytest.raises(AppError, match="reads at most 64"):
        attention(client, text=" ".join(["w1"] * 200))
    notice, *_ = attention(client)  # still working
    assert "tokens" in notice


def test_head_roles_rollout_bertviz_compare(client):
    grid, table, csv_path = client.predict("el-2l-128", 0, 0, "induction", api_name="/head_roles")
    assert table["headers"][0] == "layer" and len(table["data"]) == 2
    assert open(csv_path).read().startswith("role,layer,head,score")
    fig = figure(client.predict("el-2l-128", TEXT, "", api_name="/attention_rollout"))
    (heat,) = fig["data"]
    n = len(TEXT.split()) + 1  # with the beginning-of-sequence token
    assert heat["type"] == "heatmap" and heat["z"].shape == (n, n) and list(heat["x"])[1] == "1:w5"
    assert np.allclose(heat["z"].sum(1), 1, atol=1e-3) and np.allclose(np.triu(heat["z"], 1), 0)  # causal rows
    assert axis_titles(fig) == {"xaxis": "key (attended to)", "yaxis": "query (attending)"}
    head_html, model_html = client.predict("el-2l-128", TEXT, "", api_name="/bertviz")
    assert "<iframe" in head_html and "srcdoc" in model_html and "cdnjs" not in head_html
    fig = client.predict(None, "w1 w2 w1 w2", "el-2l-128", 1, 0, TEXT, "", 0, 256,
                         api_name="/compare_attention")
    titles = [a["text"] for a in fig["plot"] and __import__("json").loads(fig["plot"])["layout"]["annotations"]]
    assert titles[0].startswith("text A on el-2l-128") and titles[1].startswith("text B on el-2l-128")
