"""An exposed server (--host 0.0.0.0) reads no local path outside its folders, whichever tab names it."""
import shutil

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from core.engine import Engine
from core.errors import PathNotAllowedError
from core.finetune.requests import FinetuneRequest
from core.models.types import AppConfig
from test_app_finetune import widgets


@pytest.fixture(scope="module")
def exposed(tmp_path_factory, tiny_models):
    from conftest import _free_port
    from ui.app import build_app, launch_kwargs
    runs = tmp_path_factory.mktemp("exposed-runs")
    engine = Engine(AppConfig(host="0.0.0.0", port=_free_port(), offline=True, runs_dir=runs, model="default"))
    assert engine.config.exposed
    engine.models.load_default()
    demo = build_app(engine)
    kwargs = dict(launch_kwargs(engine), server_name="127.0.0.1")  # exposed by its settings, bound locally here
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **kwargs)
    outside = str(next(iter(tiny_models.values())))  # a real model folder, outside the allowed ones
    inside = runs / "kept-model"
    shutil.copytree(outside, inside)
    yield engine, Client(f"http://127.0.0.1:{engine.config.port}/", verbose=False), outside, str(inside)
    demo.close()


def test_every_tab_refuses_a_folder_outside(exposed):
    engine, client, outside, _ = exposed
    with pytest.raises(AppError, match="not allowed"):
        client.predict(outside, "", "auto", "auto", "auto", False, api_name="/load_model")
    with pytest.raises(AppError, match="not allowed"):
        client.predict(*widgets(model=outside), api_name="/finetune_preview")
    with pytest.raises(AppError, match="not allowed"):
        client.predict(*widgets(model=outside), api_name="/finetune_start")
    with pytest.raises(AppError, match="not allowed"):
        client.predict("checkpoints", outside, "", "recall", 4, "nearest", 1, 0, "step", api_name="/emergence_sweep")
    with pytest.raises(AppError, match="not allowed"):
        client.predict("models", f"el-2l-128,{outside}", "", "recall", 4, "nearest", 1, 0, "step",
                       api_name="/emergence_sweep")
    with pytest.raises(AppError, match="not allowed"):
        client.predict("checkpoints", outside, "", api_name="/emergence_heads")
    assert engine.finetune.runs() == []  # nothing was queued


def test_allowed_folders_uploads_and_embedded_models_still_work(exposed, tmp_path):
    engine, client, _, inside = exposed
    _, info, _, _, _ = client.predict(inside, "", "auto", "auto", "auto", False, api_name="/load_model")
    assert info["source"] == "local"
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"w{i} w{i + 1},w{i % 2}\n" for i in range(40)))
    msg, _ = client.predict(*widgets(source="upload", train=handle_file(str(data)), text_col="text",
                                     label_col="label"), api_name="/finetune_preview")
    assert "training" in msg  # an upload reaches the server's upload folder, which data may come from


def test_engine_refuses_data_files_outside_even_when_typed(exposed, tmp_path):
    engine, *_ = exposed
    data = tmp_path / "secret.csv"
    data.write_text("text,label\na,b\n")
    req = FinetuneRequest.from_mapping(dict(model="default", source="upload", train_file=str(data)))
    with pytest.raises(PathNotAllowedError):
        engine.finetune.start(req)
    from core.fewshot.requests import TaskRequest
    with pytest.raises(PathNotAllowedError):
        engine.fewshot.task(TaskRequest.from_mapping(dict(source="upload", train_file=str(data), label_column="label",
                                                  input_template="{text}")))
