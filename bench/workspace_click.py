"""The error-analysis workspace: how long a clicked example takes to open (its attention and the attribution of its
answer) on the embedded default model, against the issue's 5-second target.

    python bench/workspace_click.py [--limit 48] [--clicks 10]

Runs the Error analysis tab's default comparison (recall; A: k=0, B: k=4 nearest), then opens examples as a click
does (``engine.workspace.example``): the first click also measures the head roles (to preselect the top induction
head; cached after), the next ones do not. Prints the first and the median later click, with the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from core.engine import Engine  # noqa: E402
from core.models.requests import LoadRequest  # noqa: E402
from core.models.types import AppConfig  # noqa: E402

TARGET_S = 5.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--clicks", type=int, default=10)
    a = ap.parse_args()
    from test_workspace import request
    engine = Engine(AppConfig(model=None, runs_dir=Path(tempfile.mkdtemp()), offline=True))
    engine.models.load(LoadRequest(model="default"))
    ws = engine.workspace.run(request(("el-2l-128", 0, "first"), ("el-2l-128", 4, "nearest"), limit=a.limit))
    times = []
    for n in range(a.clicks):
        t0 = time.perf_counter()
        engine.workspace.example(ws, int(ws.table["index"].iloc[n]), ws.systems[1])
        times.append(time.perf_counter() - t0)
    later = statistics.median(times[1:]) if len(times) > 1 else times[0]
    print(f"load average {os.getloadavg()[0]:.1f}; first click {times[0]:.2f} s (head roles included), median of the "
          f"next {len(times) - 1}: {later:.3f} s; target {TARGET_S:.0f} s: ratio {times[0] / TARGET_S:.2f} / "
          f"{later / TARGET_S:.3f}")


if __name__ == "__main__":
    main()
