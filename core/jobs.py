"""Jobs: every engine call runs under a ``JobContext`` scoped to one session and one tab.

A job is *submitted* when a request enters the queue — a browser's click or an API client's call alike (the UI
registers it in a validator Gradio runs before queueing, and hands its id to the call) — *started* when the
engine begins the work, and dropped when the work ends. ``cancel(session, tab)`` stops every job of that session
and tab, queued or running — another session's jobs, and the same session's other tabs, go on. A job started
with no submitted id (the CLI, a notebook) is created on the spot.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from core.errors import Cancelled

Progress = Callable[[float, str], None]
PENDING_TTL_S = 3600.0  # a submitted job whose call never came (browser closed) is forgotten after this
_ids = itertools.count(1)


@dataclass
class JobContext:
    """What an engine call gets besides its request: who asked, a unique id, progress, cancel."""

    session: str = ""
    tab: str = ""
    job_id: str = field(default_factory=lambda: f"job-{next(_ids)}")
    progress: Progress | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)

    def should_stop(self) -> bool:
        return self.cancelled.is_set()

    def check(self, what: str = "The job") -> None:
        if self.cancelled.is_set():
            raise Cancelled(what)

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)

    def sub(self, lo: float, hi: float, prefix: str = "") -> Progress | None:
        """A progress callback mapping 0..1 onto lo..hi of this job's bar."""
        if self.progress is None:
            return None
        return lambda f, m: self.progress(lo + (hi - lo) * f, prefix + m)


class Jobs:
    """Submitted and running jobs. Thread-safe."""

    def __init__(self):
        self._pending: dict[str, JobContext] = {}   # job id -> a job waiting in the queue
        self._running: dict[str, JobContext] = {}
        self._lock = threading.Lock()

    def submit(self, session: str, tab: str) -> str:
        """Register a job that will start later (before its call waits in the queue); returns its id."""
        ctx = JobContext(session or "", tab)
        with self._lock:
            self._prune()
            self._pending[ctx.job_id] = ctx
        return ctx.job_id

    def start(self, session: str, tab: str, progress: Progress | None = None,
              job_id: str | None = None) -> JobContext:
        """The submitted job ``job_id`` (or a new one); raises Cancelled if it was cancelled while it waited."""
        with self._lock:
            ctx = self._pending.pop(job_id, None) if job_id else None
            if ctx is None or ctx.session != (session or "") or ctx.tab != tab:
                ctx = JobContext(session or "", tab)
            ctx.progress = progress
            self._running[ctx.job_id] = ctx
        if ctx.cancelled.is_set():
            self.finish(ctx)
            raise Cancelled("The run")
        return ctx

    def discard(self, job_id: str | None) -> None:
        """Forget a submitted job whose call ended without starting it (its input was refused, say)."""
        if job_id:
            with self._lock:
                self._pending.pop(job_id, None)

    def finish(self, ctx: JobContext) -> None:
        with self._lock:
            self._running.pop(ctx.job_id, None)

    def cancel(self, session: str, tab: str) -> int:
        """Cancel every queued and running job of (session, tab); returns how many."""
        n = 0
        with self._lock:
            for ctx in (*self._pending.values(), *self._running.values()):
                if ctx.session == (session or "") and ctx.tab == tab and not ctx.cancelled.is_set():
                    ctx.cancelled.set()
                    n += 1
        return n

    def active(self, session: str | None = None) -> list[JobContext]:
        with self._lock:
            jobs = list(self._running.values()) + list(self._pending.values())
        return [j for j in jobs if session is None or j.session == session]

    def _prune(self) -> None:
        now = time.monotonic()
        for job_id, ctx in list(self._pending.items()):
            if now - ctx.submitted > PENDING_TTL_S:
                del self._pending[job_id]
