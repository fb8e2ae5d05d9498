"""The app through its API, as gradio_client (and scripts) reach it."""
import time

import pytest
from gradio_client.exceptions import AppError

from app import parse_args

LOAD = dict(api_name="/load_model")


def load(client, model, revision="", device="auto", dtype="auto", kind="auto", trust=False):
    return client.predict(model, revision, device, dtype, kind, trust, **LOAD)


def test_every_listener_has_an_api_name(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/load_model", "/unload_model", "/model_status"} <= set(named)
    assert not client.view_api(print_info=False, return_format="dict")["unnamed_endpoints"]


def test_load_default_model_through_api(client):
    card, info, table, memory, status = load(client, "default")
    assert status == "Loaded **el-2l-128**."
    assert info["name"] == "el-2l-128" and info["source"] == "embedded" and info["kind"] == "causal_lm"
    assert "el-2l-128" in card and "Layers" in card
    assert any("el-2l-128" in row[0] for row in table["data"])
    assert "loaded" in memory


def test_load_a_checkpoint_and_unload_it(client):
    _, info, table, _, _ = load(client, "el-2l-128", "step0")
    assert info["step"] == 0 and info["key"] == "el-2l-128@step0"
    assert len(table["data"]) >= 2
    card, info2, table2, _ = client.predict(api_name="/unload_model")
    assert all(row[0] != "el-2l-128@step0" for row in table2["data"])


def test_unknown_model_gives_clear_error_and_app_keeps_working(client):
    t0 = time.monotonic()
    with pytest.raises(AppError, match="nobody-here/no-such-model"):
        load(client, "nobody-here/no-such-model")
    assert time.monotonic() - t0 < 10
    with pytest.raises(AppError, match="not a model folder"):
        load(client, "/definitely/not/here")
    with pytest.raises(AppError, match="No model given"):
        load(client, "")
    _, info, _, _, _ = load(client, "default")  # still serving
    assert info["name"] == "el-2l-128"


def test_revision_choices_follow_the_model(client):
    from core.models.embedded import find_embedded
    update = client.predict("el-2l-128", api_name="/revision_choices")
    steps = [f"step{c.step}" for c in find_embedded("el-2l-128").checkpoints]
    assert [v for _, v in update["choices"]] == ["", *steps]  # the final weights, then every checkpoint
    assert [v for _, v in client.predict("gpt2", api_name="/revision_choices")["choices"]] == [""]


def test_cli_flags_parse():
    cfg = parse_args(["--host", "0.0.0.0", "--port", "9000", "--model", "none", "--offline",
                      "--device", "cpu", "--dtype", "float32"])
    assert cfg.exposed and cfg.port == 9000 and cfg.model is None and cfg.offline
    assert not parse_args([]).exposed and parse_args([]).model == "default"
