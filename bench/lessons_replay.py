"""Classroom mode: computing every lesson step once against replaying it, as a student's press does.

    python bench/lessons_replay.py [--model default] [--lessons induction,demonstrations]

Prepares the lessons into a temporary runs folder (``engine.lessons.prepare``, what ``python -m core
prepare-lessons`` calls), then presses every step again (``engine.lessons.run_step``) and builds the view a
press shows (the figure and the step's text). Prints each step's compute time, the replay time with its view,
and the ratio of the two totals, with the load average (the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine import Engine  # noqa: E402
from core.lessons.catalogue import lesson  # noqa: E402
from core.lessons.requests import PrepareRequest, StepRequest  # noqa: E402
from core.models.types import AppConfig  # noqa: E402
from ui import lessons_plots  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--lessons", default="", help="comma-separated lesson ids (default: every lesson)")
    args = ap.parse_args()
    chosen = tuple(x for x in args.lessons.split(",") if x)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(AppConfig(model=None, max_models=3, runs_dir=Path(tmp), offline=True))
        t0 = time.perf_counter()
        done = engine.lessons.prepare(PrepareRequest(model=args.model, lessons=chosen))
        compute_wall = time.perf_counter() - t0
        rows = []
        for r in done:
            a = time.perf_counter()
            res = engine.lessons.run_step(StepRequest(lesson=r.lesson, step=r.step, model=args.model))
            lessons_plots.figure(res)
            lessons_plots.step_markdown(res, lesson(r.lesson).step(r.step))
            rows.append((r.lesson, r.step, r.seconds, time.perf_counter() - a, res.replayed))
    print(f"{'lesson':18s} {'step':10s} {'compute s':>10s} {'replay s':>9s}")
    for les, step, comp, rep, replayed in rows:
        print(f"{les:18s} {step:10s} {comp:10.2f} {rep:9.3f}" + ("" if replayed else "  (NOT replayed)"))
    replay = sum(r[3] for r in rows)
    print(f"{len(rows)} steps on {args.model}: computed in {compute_wall:.1f} s (model load included), "
          f"replayed in {replay:.2f} s (slowest step {max(r[3] for r in rows):.3f} s); "
          f"compute / replay = {compute_wall / replay:.0f}x | load average {os.getloadavg()[0]:.2f}")
    if not all(r[4] for r in rows):
        raise SystemExit("a pressed step was computed again instead of replayed")


if __name__ == "__main__":
    main()
