"""The engine: the composition root. It builds the ``Runtime`` (configuration, registry, path policy, sessions,
jobs, exports, the fine-tuning queue, the History's store) and one service per lab, each given the runtime and
the labs it uses, and keeps what belongs to a whole session: its jobs and their cancel, its export files.

The UI, the CLI and notebooks call ``engine.<lab>.<action>(request, job)``::

    engine = Engine(AppConfig(model="default"))
    engine.models.load(LoadRequest(model="default"))
    runs = engine.fewshot.run(FewShotRequest.from_mapping({...}))
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from core.attention.service import AttentionLab
from core.attribution.service import AttributionLab
from core.catalogue import Catalogue, ModelsLab
from core.emergence.service import EmergenceLab
from core.fewshot.service import FewShotLab
from core.finetune.service import FinetuneLab, StudiesLab, TaggingLab
from core.history.service import HistoryLab, WorkspaceLab
from core.interventions.service import InterventionsLab
from core.jobs import JobContext, Progress
from core.lessons.service import LessonsLab
from core.mechanism.service import MechanismLab
from core.models.types import AppConfig
from core.runtime import Runtime


class Engine:
    def __init__(self, config: AppConfig = AppConfig()):
        self.runtime = rt = Runtime(config)
        self.models = ModelsLab(rt)
        self.catalogue = Catalogue(rt, self.models)
        self.attention = AttentionLab(rt)
        self.attribution = AttributionLab(rt)
        self.fewshot = FewShotLab(rt)
        self.interventions = InterventionsLab(rt)
        self.mechanism = MechanismLab(rt)
        self.finetune = FinetuneLab(rt)
        self.studies = StudiesLab(rt, self.finetune)
        self.tagging = TaggingLab(rt)
        self.emergence = EmergenceLab(rt)
        self.history = HistoryLab(rt)
        self.workspace = WorkspaceLab(rt, self.history, self.fewshot, self.attention, self.attribution)
        self.lessons = LessonsLab(rt, self.attention, self.attribution, self.fewshot, self.interventions,
                                  self.emergence, self.mechanism, self.finetune)

    @property
    def config(self) -> AppConfig:
        """The server's configuration (read-only: what the operator chose at start)."""
        return self.runtime.config

    # ---- jobs and sessions --------------------------------------------------------------
    def submit(self, session: str, tab: str) -> str:
        """Register a run about to wait in the queue, so that a Cancel pressed meanwhile is honoured."""
        return self.runtime.jobs.submit(session, tab)

    @contextlib.contextmanager
    def job(self, session: str = "", tab: str = "", progress: Progress | None = None,
            job_id: str | None = None) -> Iterator[JobContext]:
        """The job of one call: the submitted ``job_id`` if there is one (so a Cancel sent while it waited holds)."""
        jobs = self.runtime.jobs
        ctx = jobs.start(session, tab, progress, job_id)
        try:
            yield ctx
        finally:
            jobs.finish(ctx)

    def cancel(self, session: str, tab: str) -> int:
        """Stop the session's queued and running jobs of one tab; other sessions and tabs go on."""
        return self.runtime.jobs.cancel(session, tab)

    def end_session(self, session: str) -> None:
        """A browser left: stop its jobs and live run, remove its export files (its fine-tuning runs go on)."""
        for ctx in self.runtime.jobs.active(session):
            ctx.cancelled.set()
        self.runtime.exports.drop(session)
        self.runtime.sessions.drop(session)
        self.emergence.end_session(session)

    def export(self, session: str, name: str, text: str) -> str:
        """Write an export file into the session's own folder; its path."""
        return str(self.runtime.exports.write(session, name, text))

    def allow_uploads_from(self, folder: Path | str) -> None:
        """Data files the web server received from a browser live here (allowed even when exposed)."""
        self.runtime.policy.add_upload_folder(folder)
