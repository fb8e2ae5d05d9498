"""The emergence lab: an ability and the heads behind it across a series (checkpoints of one model, or models of
several sizes), and an ability appearing live in a small run trained behind the page."""
from __future__ import annotations

from pathlib import Path

from core.emergence import series
from core.emergence.live import LiveRuns
from core.emergence.requests import HeadsRequest, LiveTrainingRequest, SeriesRequest, SweepSeriesRequest
from core.emergence.types import HeadsOverTraining, PointResult
from core.errors import UserError
from core.fewshot.types import FewShotConfig
from core.jobs import JobContext
from core.runtime import Runtime, ctx_of
from core.tasks import load_builtin


class EmergenceLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self._cache: series.Cache | None = None
        self._live: dict[str, LiveRuns] = {}

    def points(self, req: SeriesRequest) -> list[series.Point]:
        """The series a request names, every model or folder checked against the path policy."""
        for name in req.names:
            self.rt.check_path(name)
        if req.source == "checkpoints":
            return series.series_points(None, req.names[0], req.revision_list)
        return series.series_points(req.names)

    def cache(self) -> series.Cache:
        """Per-checkpoint results of sweeps and heads over training, kept across calls and restarts."""
        if self._cache is None:
            self._cache = series.Cache(Path(self.rt.config.runs_dir) / "emergence-cache.json")
        return self._cache

    def sweep(self, req: SweepSeriesRequest, job: JobContext | None = None) -> list[PointResult]:
        """Few-shot scores at every point of a series; points borrowed from the registry, results cached;
        recorded in the History."""
        ctx = ctx_of(job)
        config = FewShotConfig(k=req.k, selection=req.selection if req.k else "first", limit=req.limit)
        results = series.sweep_series(self.points(req), load_builtin(req.task), config,
                                      list(range(req.seeds)), device=self.rt.config.device,
                                      borrow=self.rt.registry.borrow, cache=self.cache(),
                                      progress=ctx.progress, should_stop=ctx.should_stop,
                                      ablate=req.ablate_heads)
        self.rt.remember("emergence", req, {f"{r.model}@{r.revision}" if r.revision else r.model:
                                            {"step": r.step, **r.metrics} for r in results}, ctx,
                         model=req.models, task=req.task, result=[r.to_dict() for r in results])
        return results

    def heads_over_training(self, req: HeadsRequest, job: JobContext | None = None) -> HeadsOverTraining:
        """Every head's roles and the in-context-learning score at every point of the series."""
        ctx = ctx_of(job)
        return series.heads_over_training(self.points(req), device=self.rt.config.device,
                                          text=req.text or None, borrow=self.rt.registry.borrow,
                                          progress=ctx.progress, should_stop=ctx.should_stop,
                                          ablate=req.ablate_heads, cache=self.cache())

    # ---- live training: one run per session -----------------------------------------------
    def _runs(self, session: str) -> LiveRuns:
        return self._live.setdefault(session, LiveRuns(Path(self.rt.config.runs_dir)))

    def live_start(self, req: LiveTrainingRequest, session: str = "") -> Path:
        """Start the session's live run (within the server's limit of live runs); its checkpoint folder."""
        cap = self.rt.config.work_limits.live_runs
        busy = [s for s, live in list(self._live.items()) if s != session and live.state() == "running"]
        if cap and len(busy) >= cap:
            raise UserError(f"{len(busy)} live run(s) are training on this server, its limit ({cap}). Watch the "
                            "checkpoint series instead, or try again when one ends.")
        return self._runs(session).start(req.steps)

    def live_status(self, session: str = "") -> tuple[str, list[dict], Path | None]:
        """(state, events so far, the checkpoint folder) of this session's live run."""
        live = self._runs(session)
        return live.state(), live.events(), live.folder

    def live_stop(self, session: str = "") -> str:
        return self._runs(session).stop()

    def end_session(self, session: str) -> None:
        """A browser left: its live run stops."""
        live = self._live.pop(session, None)
        if live is not None:
            live.stop()
