"""The History (every run kept, as the session asking sees it: on a shared server its owner's runs and shared
ones) and the error-analysis workspace over its few-shot runs: systems side by side, sliced, one example opened
with its attention and the attribution of its answer, examples tagged."""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from core.attention.requests import AttentionRequest, HeadRolesRequest
from core.attribution.requests import AttributionRequest
from core.errors import UserError
from core.exports import csv_text
from core.fewshot.requests import FewShotRequest
from core.fewshot.types import FewShotRun
from core.history import workspace as wsp
from core.history.store import History, RunRecord
from core.jobs import JobContext
from core.runtime import Runtime, ctx_of

if TYPE_CHECKING:  # the peer labs it is built with (types only: a lab reaches another through its constructor)
    from core.attention.service import AttentionLab
    from core.attribution.service import AttributionLab
    from core.fewshot.service import FewShotLab

FEWSHOT_LABS = ("fewshot", "sweep", "ablation")  # labs whose History records are few-shot runs


class HistoryLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def available(self) -> bool:
        """Whether the History could be opened (a read-only or full disk at start: the labs work, nothing kept)."""
        return self.rt.history is not None

    def store(self) -> History:
        if self.rt.history is None:
            raise UserError(self.rt.history_error or "The experiment history is not available.")
        return self.rt.history

    def viewer(self, session: str) -> str | None:
        """Whose History a session sees: its owner's on a shared server; everything (None) on one person's own
        machine, from the CLI, and for an operator."""
        if not self.rt.config.per_user or not session or self.rt.sessions.is_operator(session):
            return None
        return self.rt.sessions.owner(session)

    def recording_notice(self) -> str:
        """One plain line when runs are not being recorded (a full or read-only disk), else ''."""
        if self.rt.history is None:
            return self.rt.history_error or "The experiment history is not available."
        return self.rt.history.unwritable() or self.rt.history_error or ""

    def runs(self, lab: str | None = None, text: str | None = None, tag: str | None = None,
             model: str | None = None, task: str | None = None, session: str = "") -> list[RunRecord]:
        return self.store().runs(lab=lab or None, model=model or None, task=task or None, tag=tag or None,
                                 text=text or None, viewer=self.viewer(session))

    def owned(self, record: RunRecord, session: str = "") -> bool:
        """Whether the session may change this run (its own, or any on one person's machine)."""
        viewer = self.viewer(session)
        return viewer is None or record.owner == viewer

    def reopen(self, run_id: str, session: str = "") -> tuple[RunRecord, list[FewShotRun], object]:
        """(the record, its few-shot runs rebuilt as they were — [] for other labs —, the stored result)."""
        h, viewer = self.store(), self.viewer(session)
        rec, result = h.get(run_id, viewer), h.result(run_id, viewer)
        runs = [FewShotRun.from_dict(r) for r in result] if rec.lab in FEWSHOT_LABS and result else []
        for r in runs:
            r.history_id = run_id
        return rec, runs, result

    def edit(self, run_id: str, name: str | None = None, note: str | None = None,
             tag: str | None = None, session: str = "") -> None:
        h, viewer = self.store(), self.viewer(session)
        if name is not None and name.strip():
            h.rename(run_id, name.strip(), viewer)
        if note is not None:
            h.set_note(run_id, note, viewer)
        if tag and tag.strip():
            h.tag(run_id, tag, viewer)

    def share(self, run_id: str, shared: bool = True, session: str = "") -> None:
        """Show one of the session's runs to everyone on the server (read-only for them), or stop."""
        self.store().share(run_id, shared, self.viewer(session))

    def tag_examples(self, run_id: str, indices, tag: str, note: str = "", session: str = "") -> int:
        if not (tag or "").strip():
            raise UserError("Type the tag to give the examples (e.g. 'label noise').")
        idx = [int(i) for i in indices]
        if not idx:
            raise UserError("Name the examples to tag by their index, e.g. 3,7,12.")
        viewer = self.viewer(session)
        known = {e.idx for e in self.store().examples(run_id, viewer=viewer)}
        missing = sorted(set(idx) - known)
        if missing:
            raise UserError(f"Run {run_id} has no example {missing[0]}.")
        self.store().tag_examples(run_id, idx, tag, note, viewer)
        return len(idx)

    def delete(self, run_id: str, confirm: bool, session: str = "") -> None:
        if not confirm:
            raise UserError("Tick 'yes, delete it' first: a deleted run cannot be brought back.")
        self.store().delete(run_id, self.viewer(session))

    def examples_csv(self, run_id: str, tag: str | None = None, session: str = "") -> str:
        rows = [[run_id, e.config, e.idx, e.input, e.gold, e.prediction, e.correct, json.dumps(e.logprobs),
                 ";".join(e.tags)] for e in self.store().examples(run_id, tag or None, self.viewer(session))]
        return csv_text(["run", "configuration", "index", "input", "gold", "prediction", "correct", "logprobs",
                         "tags"], rows)


class WorkspaceLab:
    def __init__(self, runtime: Runtime, history: HistoryLab, fewshot: FewShotLab, attention: AttentionLab,
                 attribution: AttributionLab):
        self.rt = runtime
        self.history, self.fewshot, self.attention, self.attribution = history, fewshot, attention, attribution

    def run(self, req: FewShotRequest, job: JobContext | None = None) -> wsp.Workspace:
        """Score the systems (a few-shot comparison; recorded in the history) and lay them out."""
        return wsp.build(self.fewshot.run(req, job))

    def open(self, history_ids: list[str], session: str = "") -> wsp.Workspace:
        """Systems from one or more few-shot runs in the history (two or more: compared side by side)."""
        runs, ids = [], []
        for hid in [h.strip() for h in history_ids if h and h.strip()]:
            rec, found, _ = self.history.reopen(hid, session)
            if not found:
                raise UserError(f"Run {hid} is a {rec.lab} run; the workspace opens few-shot runs and sweeps.")
            runs += found
            ids += [hid] * len(found)
        if not runs:
            raise UserError("Name the history run(s) to open, e.g. 20261202-101500-ab12cd.")
        return wsp.build(runs, ids)

    def tags(self, ws: wsp.Workspace, session: str = "") -> dict[int, list[str]]:
        out: dict[int, set] = {}
        if self.rt.history is None:
            return {}
        for hid in sorted({h for h in ws.history_ids if h}):
            for e in self.history.store().examples(hid, viewer=self.history.viewer(session)):
                out.setdefault(e.idx, set()).update(e.tags)
        return {i: sorted(t) for i, t in out.items()}

    def tag(self, ws: wsp.Workspace, indices, tag: str, note: str = "", session: str = "") -> int:
        """Tag the examples in every history run of the workspace (the History tab and CLI filter by it)."""
        ids = sorted({h for h in ws.history_ids if h})
        if not ids:
            raise UserError("This workspace is not in the history (it could not be recorded), so tags cannot be kept.")
        n = 0
        for hid in ids:
            n = self.history.tag_examples(hid, indices, tag, note, session)
        return n

    def _model(self, key: str) -> str:
        """The run's model, loaded if it is not (a plain name or folder reloads; a key with options must be
        loaded by hand)."""
        if key in self.rt.registry.keys():
            return key
        plain = re.sub(r" \[.*\]$", "", key)
        if plain != key:
            raise UserError(f"The model of this run ({key}) is not loaded; load it in the Model tab with the same "
                            "options, then open the example again.")
        name, _, rev = plain.partition("@")
        return self.rt.load(self.rt.spec(name, rev or None)).info.key

    def example(self, ws: wsp.Workspace, index: int, system: str = "", layer: int | None = None,
                head: int | None = None, job: JobContext | None = None) -> wsp.ExampleDetail:
        """One example of one system: its prompt, every system's answer and probabilities, the attention of a
        head (by default the model's top induction head) and which demonstrations drove the answer."""
        system = system or ws.systems[0]
        run = ws.run_of(system)
        ex = next((e for e in run.examples if e.index == int(index)), None)
        if ex is None:
            raise UserError(f"Example {index} is not among the scored test rows.")
        key = self._model(run.model_key)
        if layer is None or head is None:
            layer, head, score = self.attention.head_scores(HeadRolesRequest(model=key), job).top("induction", 1)[0]
            note = f"the model's top induction head (score {score:.2f})"
        else:
            note = "chosen"
        att = self.attention.run(AttentionRequest(model=key, text=ex.prompt, layer=int(layer), head=int(head),
                                                  all_heads=False), job, record=False)
        if ex.demos:  # which demonstrations drove the answer
            attr = self.attribution.example(run, ex.index, job)
        else:
            delim = run.config.template.target_delimiter if run.config.template else " "
            attr = self.attribution.run(AttributionRequest(model=key, prompt=ex.prompt, target=delim + ex.prediction,
                                                           method="ablation", granularity="word").check(), job)
        others = {s: next(e for e in r.examples if e.index == ex.index) for s, r in zip(ws.systems, ws.runs)}
        return wsp.ExampleDetail(ex.index, system, key, ex.prompt, ex.gold, ws.choices,
                                 {s: list(e.probs) for s, e in others.items()},
                                 {s: e.prediction for s, e in others.items()}, int(layer), int(head), note, att,
                                 attr, self.tags(ws, ctx_of(job).session).get(ex.index, []))
