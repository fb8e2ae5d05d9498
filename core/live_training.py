"""Live training: a tiny model trained from scratch in a subprocess, watched through its progress file.

``python -m core train-tiny --preset live`` writes one JSON line per evaluation
(step, training loss, ICL score, top induction score, recall accuracy) and
checkpoints under ``RUN/live/step-N``, which ``core.emergence.series_points``
reads as a series. A crash or a stop ends the subprocess, never the app.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


class LiveRuns:
    """Tiny models trained from scratch in a subprocess (``python -m core train-tiny --preset live``)."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None

    def start(self, steps: int | None = None) -> Path:
        if self.proc is not None and self.proc.poll() is None:
            raise UserError("A live run is already training; stop it first.")
        parent = self.runs_dir / f"live-{time.strftime('%Y%m%d-%H%M%S')}"
        parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "core", "train-tiny", "--preset", "live", "--out", str(parent),
               "--progress", str(parent / "progress.jsonl")] + (["--steps", str(steps)] if steps else [])
        log = open(parent / "log.txt", "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.folder = parent / "live"
        return parent

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def events(self) -> list[dict]:
        if self.folder is None:
            return []
        path = self.folder.parent / "progress.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def state(self) -> str:
        if self.proc is None:
            return "idle"
        rc = self.proc.poll()
        return "running" if rc is None else ("finished" if rc == 0 else f"stopped (exit status {rc})")
