"""Start-up: the app's page and the CLI's light commands are built without importing torch or
transformers (they cost seconds; the default model loads behind the page). Measured in bench/startup.py."""
import os
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.lazy import lazy, no_grad

ROOT = Path(__file__).resolve().parent.parent
BUILD = """
import json, sys
import app
from core.engine import Engine
from ui.app import build_app
engine = Engine(app.parse_args(["--offline", "--model", "none"]))
build_app(engine)
print(json.dumps({m: m in sys.modules for m in ("torch", "transformers", "gradio")}))
"""


def test_the_page_is_built_without_torch_or_transformers():
    res = subprocess.run([sys.executable, "-c", BUILD], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    assert loaded == {"torch": False, "transformers": False, "gradio": True}


@pytest.mark.parametrize("argv", [["models"], ["--help"], ["fewshot", "--help"], ["history", "--help"]])
def test_light_cli_commands_do_not_import_torch(argv):
    """(--help once imported torch, about 7 s here, through the train-tiny command's options)"""
    code = (f"import sys, core.cli\ntry:\n    core.cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_lazy_modules_act_as_the_module_once_used():
    import torch
    lazy_torch = lazy("torch")
    assert lazy_torch.float32 is torch.float32 and lazy_torch.nn.Module is torch.nn.Module
    assert lazy("torch.nn.functional").softmax is torch.nn.functional.softmax

    @no_grad
    def grad_enabled(x):
        """documented"""
        return torch.is_grad_enabled(), (x * 2).requires_grad
    assert grad_enabled(torch.ones(2, requires_grad=True)) == (False, False)
    assert grad_enabled.__doc__ == "documented" and torch.is_grad_enabled()


def test_the_cli_runs_from_any_folder_once_installed(tmp_path):
    """The README installs the project in place (pip install --no-deps -e .): ``python -m core`` and the
    ``emergence-lab`` command then work from any folder, not only the project's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "core", "models"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, ("not installed? run `pip install --no-deps -e .` as the README says\n"
                                 + res.stderr[-2000:])
    assert any(m["source"] == "embedded" for m in json.loads(res.stdout))
    script = Path(sys.executable).with_name("emergence-lab")
    assert script.exists(), "the emergence-lab command is installed with the project (pip install --no-deps -e .)"
    res = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and "Emergence Lab engine" in res.stdout, res.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # nothing written where it ran
