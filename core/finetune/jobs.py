"""Fine-tuning runs as subprocesses: a queue (one training job at a time), status, cancel, resume.

Each job is ``python -m core finetune --spec REQUEST --out RUN_DIR`` in its own
process group. The app never imports the training state: it polls the run's
``progress.jsonl`` (``core.finetune.train.read_status``). A job that dies without
writing its ``end`` event (killed, crashed, out of memory in native code) is
reported as failed with its exit status and the tail of its log; its last
checkpoint stays loadable and the run can be resumed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from core.errors import UserError
from core.finetune.parallel import launch_command
from core.finetune.runs import (CANCEL_FILE, OWNER_FILE, PID_FILE, Process, last_checkpoint, list_runs, run_state,
                               write_end)
from core.finetune.types import FinetuneSpec, FinetuneStatus

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER_S = 15.0  # a cancelled job gets this long to save its checkpoint before SIGKILL


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", Path(text).name if os.sep in text else text).strip("-")[:40] or "model"


class FinetuneJobs:
    """The app's training queue. Thread-safe; state lives in the run folders."""

    def __init__(self, runs_dir: Path | str, threads: int | None = None, time_limit_s: float | None = None):
        self.runs_dir = Path(runs_dir)
        self.threads = threads
        self.time_limit_s = time_limit_s  # each run stops itself (with a checkpoint) after this long
        self._queue: deque[tuple[str, list[str], int]] = deque()  # (run name, argv, processes)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._owners: dict[str, str] = {}  # run name -> the session that started it (this app's runs)

    # ---- submitting -----------------------------------------------------------------
    def submit(self, spec: FinetuneSpec, name: str | None = None, session: str = "", owner: str = "") -> str:
        spec.check()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        name = name or (f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}-{_slug(spec.model)}-"
                        f"{spec.data.task or 'upload'}-{spec.method}")  # two sessions in one second differ
        run_dir = self.runs_dir / name
        if run_dir.exists():
            raise UserError(f"A run named {name!r} already exists.")
        run_dir.mkdir(parents=True)
        spec = _keep_data(spec, run_dir)
        request = run_dir / "request.json"
        request.write_text(json.dumps(spec.to_dict(), indent=2))
        (run_dir / OWNER_FILE).write_text(owner)
        self._owners[name] = session
        self._enqueue(name, ["--spec", str(request), "--out", str(run_dir)], spec.processes)
        return name

    def owner(self, name: str) -> str | None:
        """The session that started the run in this app, or None (started elsewhere or before a restart)."""
        return self._owners.get(name)

    def active_of(self, session: str) -> list[str]:
        """The session's runs that are queued or running."""
        return [n for n in self.queue() if self._owners.get(n) == session]

    def resume(self, name: str, session: str = "") -> str:
        run_dir = self.run_dir(name)
        if self.is_active(name):
            raise UserError(f"Run {name!r} is already queued or running.")
        if (run_dir / "metrics.json").exists():
            raise UserError(f"Run {name!r} has already finished.")
        if last_checkpoint(run_dir) is None:
            raise UserError(f"Run {name!r} has no checkpoint to resume from; start it again instead.")
        self._owners[name] = session
        try:
            processes = int(json.loads((run_dir / "spec.json").read_text()).get("processes", 1))
        except (OSError, ValueError):
            processes = 1
        self._enqueue(name, ["--resume", str(run_dir)], processes)
        return name

    def _enqueue(self, name: str, argv: list[str], processes: int = 1) -> None:
        with self._lock:
            self._queue.append((name, argv, processes))
        self._pump()

    def _pump(self) -> None:
        """Start the next queued job when none is running (skipping those the operator cancelled meanwhile)."""
        with self._lock:
            if any(p.poll() is None for p in self._procs.values()):
                return
            while self._queue and (self.runs_dir / self._queue[0][0] / CANCEL_FILE).exists():
                skipped = self._queue.popleft()[0]
                write_end(self.runs_dir / skipped, "cancelled", "Cancelled by the operator before it started.")
            if not self._queue:
                return
            name, argv, processes = self._queue.popleft()
            run_dir = self.runs_dir / name
            cmd = launch_command(argv, processes)  # several processes: torchrun, every rank in this group
            if self.threads:
                cmd += ["--threads", str(self.threads)]
            if self.time_limit_s:
                cmd += ["--time-limit-s", f"{self.time_limit_s:g}"]
            log = open(run_dir / "log.txt", "ab")
            self._cancelled.discard(name)
            self._procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True)
            log.close()
            (run_dir / PID_FILE).write_text(str(self._procs[name].pid))

    # ---- watching ---------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        path = (self.runs_dir / name).resolve()
        if not path.is_relative_to(self.runs_dir.resolve()) or not (path / "request.json").exists() and \
                not (path / "spec.json").exists():
            raise UserError(f"No run named {name!r} in {self.runs_dir}.")
        return path

    def is_active(self, name: str) -> bool:
        with self._lock:
            proc = self._procs.get(name)
            return any(n == name for n, *_ in self._queue) or (proc is not None and proc.poll() is None)

    def queue(self) -> list[str]:
        with self._lock:
            running = [n for n, p in self._procs.items() if p.poll() is None]
            return running + [n for n, *_ in self._queue]

    def status(self, name: str) -> FinetuneStatus:
        """The run's true state, from its progress file and its process (``core.finetune.runs.run_state``)."""
        self._pump()
        run_dir = self.run_dir(name)
        with self._lock:
            queued = [n for n, *_ in self._queue]
            proc = self._procs.get(name)
            running = sum(p.poll() is None for p in self._procs.values())
        if name in queued:
            process = Process(queued_ahead=queued.index(name) + running)
        elif proc is not None:
            process = Process(known=True, exit_code=proc.poll(), stopped_by_user=name in self._cancelled)
        else:
            process = Process(known=False, alive=_pid_alive(run_dir))
        return run_state(run_dir, process)

    def cancel(self, name: str) -> str:
        """Queued: dropped. Running: SIGTERM (it saves a checkpoint and stops), SIGKILL if it hangs."""
        with self._lock:
            for i, (n, *_) in enumerate(self._queue):
                if n == name:
                    del self._queue[i]
                    write_end(self.runs_dir / name, "cancelled", "Cancelled before it started.")
                    return "Cancelled before it started."
            proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return "That run is not running."
        self._cancelled.add(name)
        os.killpg(proc.pid, signal.SIGTERM)

        def hard_kill():
            try:
                proc.wait(KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        threading.Thread(target=hard_kill, daemon=True).start()
        return "Cancelling: saving a checkpoint, then stopping."

    def kill(self, name: str) -> None:
        """SIGKILL, no checkpoint (tests use it to simulate a crash)."""
        with self._lock:
            proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def wait(self, name: str, timeout: float = 600.0, poll: float = 0.5) -> FinetuneStatus:
        end = time.time() + timeout
        while time.time() < end:
            st = self.status(name)
            if st.done:
                return st
            time.sleep(poll)
        raise TimeoutError(f"run {name} still running after {timeout} s")

    def runs(self):
        """Every run, each in the state ``status`` derives (the same in every view)."""
        out = []
        for r in list_runs(self.runs_dir):
            try:
                st = self.status(r.name)
            except UserError:
                continue
            out.append(replace(r, state=st.state))
        return out

    def shutdown(self) -> None:
        with self._lock:
            self._queue.clear()
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)


def _keep_data(spec: FinetuneSpec, run_dir: Path) -> FinetuneSpec:
    """Copy uploaded files into the run: a browser upload is a temporary file, the run must outlive it."""
    changes = {}
    for field_name in ("train_path", "eval_path"):
        src = getattr(spec.data, field_name)
        if src:
            if not Path(src).is_file():
                raise UserError(f"File not found: {src}")
            (run_dir / "data").mkdir(exist_ok=True)
            dst = run_dir / "data" / f"{field_name.split('_')[0]}{Path(src).suffix}"
            shutil.copyfile(src, dst)
            changes[field_name] = str(dst)
    return replace(spec, data=replace(spec.data, **changes)) if changes else spec


def _pid_alive(run_dir: Path) -> bool:
    """Whether the process recorded for a run (by this or an earlier app) still runs."""
    try:
        pid = int((run_dir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
