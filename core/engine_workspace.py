"""The engine's error-analysis workspace (mixed into ``core.engine.Engine``): build one from a few-shot comparison
run now or from runs in the history, slice it, open one example (its attention and the attribution of its
answer), tag examples. The pure parts are ``core.history.workspace``."""
from __future__ import annotations

import re

from core.errors import UserError
from core.history import workspace as wsp
from core.fewshot.requests import FewShotRequest
from core.jobs import JobContext


class WorkspaceLabs:
    def workspace_run(self, req: FewShotRequest, job: JobContext | None = None) -> wsp.Workspace:
        """Score the systems (a few-shot comparison; recorded in the history) and lay them out."""
        return wsp.build(self.fewshot(req, job))

    def workspace_open(self, history_ids: list[str], session: str = "") -> wsp.Workspace:
        """Systems from one or more few-shot runs in the history (two or more: compared side by side)."""
        runs, ids = [], []
        for hid in [h.strip() for h in history_ids if h and h.strip()]:
            rec, found, _ = self.history_reopen(hid, session)
            if not found:
                raise UserError(f"Run {hid} is a {rec.lab} run; the workspace opens few-shot runs and sweeps.")
            runs += found
            ids += [hid] * len(found)
        if not runs:
            raise UserError("Name the history run(s) to open, e.g. 20261202-101500-ab12cd.")
        return wsp.build(runs, ids)

    def workspace_tags(self, ws: wsp.Workspace, session: str = "") -> dict[int, list[str]]:
        out: dict[int, set] = {}
        if self.history is None:
            return {}
        for hid in sorted({h for h in ws.history_ids if h}):
            for e in self._history().examples(hid, viewer=self._viewer(session)):
                out.setdefault(e.idx, set()).update(e.tags)
        return {i: sorted(t) for i, t in out.items()}

    def workspace_tag(self, ws: wsp.Workspace, indices, tag: str, note: str = "", session: str = "") -> int:
        """Tag the examples in every history run of the workspace (the History tab and CLI filter by it)."""
        ids = sorted({h for h in ws.history_ids if h})
        if not ids:
            raise UserError("This workspace is not in the history (it could not be recorded), so tags cannot be kept.")
        n = 0
        for hid in ids:
            n = self.history_tag_examples(hid, indices, tag, note, session)
        return n

    def _workspace_model(self, key: str) -> str:
        """The run's model, loaded if it is not (a plain name or folder reloads; a key with options must be
        loaded by hand)."""
        if key in self.registry.keys():
            return key
        plain = re.sub(r" \[.*\]$", "", key)
        if plain != key:
            raise UserError(f"The model of this run ({key}) is not loaded; load it in the Model tab with the same "
                            "options, then open the example again.")
        name, _, rev = plain.partition("@")
        return self.load(self.spec(name, rev or None)).key

    def workspace_example(self, ws: wsp.Workspace, index: int, system: str = "", layer: int | None = None,
                          head: int | None = None, job: JobContext | None = None) -> wsp.ExampleDetail:
        from core.attention.requests import AttentionRequest, HeadRolesRequest
        from core.attribution.requests import AttributionRequest
        system = system or ws.systems[0]
        run = ws.run_of(system)
        ex = next((e for e in run.examples if e.index == int(index)), None)
        if ex is None:
            raise UserError(f"Example {index} is not among the scored test rows.")
        key = self._workspace_model(run.model_key)
        if layer is None or head is None:
            layer, head, score = self.head_scores(HeadRolesRequest(model=key), job).top("induction", 1)[0]
            note = f"the model's top induction head (score {score:.2f})"
        else:
            note = "chosen"
        att = self.attention(AttentionRequest(model=key, text=ex.prompt, layer=int(layer), head=int(head),
                                              all_heads=False), job, record=False)
        if ex.demos:  # which demonstrations drove the answer
            attr = self.attribute_example(run, ex.index, job)
        else:
            delim = run.config.template.target_delimiter if run.config.template else " "
            attr = self.attribute(AttributionRequest(model=key, prompt=ex.prompt, target=delim + ex.prediction,
                                                     method="ablation", granularity="word").check(), job)
        others = {s: next(e for e in r.examples if e.index == ex.index) for s, r in zip(ws.systems, ws.runs)}
        return wsp.ExampleDetail(ex.index, system, key, ex.prompt, ex.gold, ws.choices,
                                 {s: list(e.probs) for s, e in others.items()},
                                 {s: e.prediction for s, e in others.items()}, int(layer), int(head), note, att,
                                 attr, self.workspace_tags(ws, self._ctx(job).session).get(ex.index, []))
