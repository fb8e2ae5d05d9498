import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if "EMERGENCE_LAB_CACHE" not in os.environ:  # converted GGUF/packaged models: once per test session, not in ~
    import tempfile
    os.environ["EMERGENCE_LAB_CACHE"] = tempfile.mkdtemp(prefix="el-cache-")
# runs and the History of every engine, CLI call and app the tests start (subprocesses inherit it): never the
# project's own runs/, whose History a person reads in the app
import tempfile  # noqa: E402
os.environ["EMERGENCE_LAB_RUNS"] = tempfile.mkdtemp(prefix="el-runs-")


def _project_writes() -> dict[str, float]:
    """Files the tests could write into the project folder: its runs/ (ignored by git, read by the app)."""
    folder = ROOT / "runs"
    return {str(p): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def pytest_sessionstart(session):
    session.config._el_project_files = _project_writes()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_el_project_files", None)
    if before is None or getattr(session.config, "workerinput", None) is not None:
        return
    changed = sorted(p for p, t in _project_writes().items() if before.get(p) != t)
    if changed:
        session.config.get_terminal_writer().line(
            f"The tests wrote into the project folder ({len(changed)} files), e.g. {changed[:3]}: a test must write "
            "only under temporary folders.", red=True)
        session.exitstatus = 1


def wait_until(cond, what: str, ceiling: float = 300.0, poll: float = 0.05) -> None:
    """Wait on a condition (no timing is asserted; the ceiling only stops a hung test)."""
    import time
    end = time.monotonic() + ceiling
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(poll)


def needs_package(name: str):
    """Skip (with the install command) when a packaged pretrained model is not installed."""
    from core.models.packaged import find_packaged
    p = find_packaged(name)
    return pytest.mark.skipif(not p.installed(), reason=f"{name} is not installed: {p.install}")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M from its package (converted from GGUF once per session, ~40 s)."""
    from core.models.loading import load_model
    from core.models.packaged import find_packaged
    from core.models.types import ModelSpec
    if not find_packaged("smollm2-135m").installed():
        pytest.skip(f"smollm2-135m is not installed: {find_packaged('smollm2-135m').install}")
    return load_model(ModelSpec("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from tiny import build_tiny_models
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium (needs /usr/bin/chromium)")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    import torch
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The real app on a free localhost port, with the embedded default model loaded."""
    from core.engine import Engine
    from core.models.types import AppConfig
    from ui.app import build_app, launch_kwargs

    engine = Engine(AppConfig(port=_free_port(), offline=True, runs_dir=tmp_path_factory.mktemp("runs")))
    engine.models.load_default()
    demo = build_app(engine)
    kwargs = launch_kwargs(engine)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **kwargs)
    url = f"http://127.0.0.1:{engine.config.port}/"
    yield engine, url
    demo.close()


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client
    return Client(app_server[1], verbose=False)


@pytest.fixture(scope="session")
def bpe_models(tmp_path_factory) -> dict[str, Path]:
    from tiny import build_bpe_models
    return build_bpe_models(tmp_path_factory.mktemp("bpe_models"))


@pytest.fixture(scope="session")
def ner_run(app_server, tiny_models):
    """A small token classifier trained into the app's runs folder (listed like any finished run)."""
    from core.finetune.train import train_run
    from core.finetune.types import DataSpec, FinetuneSpec
    engine, _ = app_server
    spec = FinetuneSpec(model=str(tiny_models["bert"]), data=DataSpec(task="ner", max_eval=40),
                        objective="token-classification", method="full", lr=3e-3, max_steps=20, batch_size=16)
    return train_run(spec, engine.config.runs_dir / "ner-tiny-bert")["model_path"]


def figure(value) -> dict:
    """A plot as an app client receives it (plotly JSON; numpy arrays as base64 ``bdata``), with every array of
    every trace decoded: what a test checks of a picture."""
    import base64
    import json as _json

    import numpy as np

    def arr(v):
        if isinstance(v, dict) and "bdata" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            return a.reshape([int(x) for x in str(v.get("shape", len(a))).split(",")])
        return v
    assert isinstance(value, dict) and value.get("type") == "plotly", f"not a plotly figure: {str(value)[:200]}"
    fig = _json.loads(value["plot"])
    fig["data"] = [{k: arr(v) for k, v in t.items()} for t in fig["data"]]
    return fig


def axis_titles(fig: dict) -> dict[str, str | None]:
    return {k: (v.get("title") or {}).get("text") for k, v in fig["layout"].items() if k.startswith(("xaxis", "yaxis"))}
