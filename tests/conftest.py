import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


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
    engine.load_default()
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
