"""core/ is usable without gradio: every module imports with gradio blocked."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_without_gradio():
    modules = [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if not m.name.endswith("__main__")]
    assert "core.models.loading" in modules and "core.engine" in modules
    code = ("import sys; sys.modules['gradio'] = None\n"
            + "".join(f"import {m}\n" for m in modules)
            + "assert 'gradio' not in [k for k, v in sys.modules.items() if v is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_core_source_never_mentions_gradio():
    for path in (ROOT / "core").rglob("*.py"):
        assert "import gradio" not in path.read_text(), path
