"""Live training: a tiny model trained from scratch in a subprocess, watched through its progress file.

``python -m core train-tiny --preset live`` writes one JSON line per evaluation
(step, training loss, ICL score, top induction score, recall accuracy) and
checkpoints under ``RUN/live/step-N``, which ``core.emergence.series.series_points``
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

ROOT = Path(__file__).resolve().parents[2]


class LiveRuns:
    """Tiny models trained from scratch in a subprocess (``python -m core train-tiny --preset live``)."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None
        self.stopped = False

    def start(self, steps: int | None = None) -> Path:
        if self.proc is not None and self.proc.poll() is None:
            raise UserError("A live run is already training; stop it first.")
        parent = self.runs_dir / f"live-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
        parent.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        cmd = [sys.executable, "-m", "core", "train-tiny", "--preset", "live", "--out", str(parent),
               "--progress", str(parent / "progress.jsonl")] + (["--steps", str(steps)] if steps else [])
        log = open(parent / "log.txt", "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.folder = parent / "live"
        return parent

    def stop(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            self.stopped = True
            os.killpg(self.proc.pid, signal.SIGTERM)
            return "Stopping the live run."
        return "No live run is training."

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
        """idle, running, finished, stopped by you, or failed with the last line of its error."""
        if self.proc is None:
            return "idle"
        rc = self.proc.poll()
        if rc is None:
            return "running"
        if rc == 0:
            return "finished"
        if self.stopped:
            return "stopped by you"
        from core.finetune.runs import log_tail
        tail = log_tail(self.folder.parent) if self.folder else ""
        return "failed" + (f" ({'killed by signal ' + str(-rc) if rc < 0 else 'exit status ' + str(rc)})") \
            + (f": {tail}" if tail else "")
