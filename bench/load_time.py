"""Time to load the embedded default model, and to cold-start the app.

    python bench/load_time.py [--repeats 5]

Load: ``load_model(ModelSpec("default"))`` in a warm process (imports done),
against the reference of ``AutoModelForCausalLM.from_pretrained`` +
``AutoTokenizer.from_pretrained`` on the same folder in the same run.
Cold start: a fresh ``python app.py --port P --offline`` process until its
page answers HTTP 200 and the default model is loaded (the app loads it
before serving). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cold_start(timeout: float = 120.0) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--offline"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("app did not start")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models.embedded import find_embedded
    from core.models.loading import load_model
    from core.models.types import ModelSpec

    path = find_embedded("default").path
    plain = _median_time(lambda: (AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                                  AutoTokenizer.from_pretrained(path)), args.repeats)
    ours = _median_time(lambda: load_model(ModelSpec("default")), args.repeats)
    starts = [cold_start() for _ in range(3)]
    print(json.dumps({
        "model": str(path.relative_to(ROOT)),
        "load_s": round(ours, 4), "reference_from_pretrained_s": round(plain, 4),
        "load_ratio": round(ours / plain, 2),
        "app_cold_start_s": round(statistics.median(starts), 2),
        "app_cold_start_runs_s": [round(s, 2) for s in starts],
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
