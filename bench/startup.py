"""Start-up: how long until a person gets an answer, each beside a reference measured in the same run.

    python bench/startup.py [--repeats 3]

- ``python -m core models`` and ``python -m core info --model default``, beside ``python -c pass``
  and beside ``import torch, transformers`` (the floor any command that loads a model pays); ``info``
  twice: with an empty cache folder (it loads) and again (it answers from the kept card);
- ``python app.py --offline``: seconds until the page answers (GET / returns 200) and until the default
  model is loaded (the log line), beside ``import gradio`` (the floor of any Gradio app).
Medians of ``--repeats`` runs; the machine's load average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_times(ceiling: float = 300.0) -> tuple[float, float | None]:
    """(seconds until the page answers, seconds until the default model is loaded)."""
    port = free_port()
    log = ROOT / "bench" / f".startup-{port}.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "app.py", "--offline", "--port", str(port)], cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT)
    page = loaded = None
    try:
        while time.perf_counter() - t0 < ceiling and (page is None or loaded is None):
            if page is None:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                    page = time.perf_counter() - t0
                except OSError:
                    pass
            if loaded is None and "loaded el-2l-128" in log.read_text():
                loaded = time.perf_counter() - t0
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()
        log.unlink(missing_ok=True)
    return page, loaded


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    py = sys.executable
    med = lambda f: round(statistics.median(f() for _ in range(args.repeats)), 2)  # noqa: E731
    out = {"python_pass_s": med(lambda: wall([py, "-c", "pass"])),
           "import_torch_transformers_s": med(lambda: wall([py, "-c", "import torch, transformers"])),
           "import_gradio_s": med(lambda: wall([py, "-c", "import gradio"])),
           "cli_models_s": med(lambda: wall([py, "-m", "core", "models"])),
           }
    cache = Path(tempfile.mkdtemp())
    info = [py, "-m", "core", "info", "--model", "default", f"--cache-dir={cache}"]

    def first_info() -> float:
        shutil.rmtree(cache / "info", ignore_errors=True)  # nothing kept: it loads
        return wall(info)
    out["cli_info_default_first_s"] = med(first_info)
    out["cli_info_default_s"] = med(lambda: wall(info))  # the card kept by the first
    shutil.rmtree(cache, ignore_errors=True)
    runs = [app_times() for _ in range(args.repeats)]
    out["app_page_s"] = round(statistics.median(r[0] for r in runs), 2)
    out["app_default_model_loaded_s"] = round(statistics.median(r[1] for r in runs if r[1]), 2)
    out["targets"] = {"cli_models_s <= 1.5": out["cli_models_s"] <= 1.5,
                      "cli_info_default_s <= 3 (kept card)": out["cli_info_default_s"] <= 3,
                      "cli_info_default_first_s <= 3 (loading)": out["cli_info_default_first_s"] <= 3,
                      "app_page_s <= 5": out["app_page_s"] <= 5}
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
