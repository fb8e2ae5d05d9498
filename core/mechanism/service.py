"""The mechanism lab: task vectors and function vectors of a task on a model — where in the residual stream the
demonstrations' task is carried, which heads carry it, and whether it performs the task without them."""
from __future__ import annotations

from pathlib import Path

from core.emergence import series
from core.errors import ModelLoadError
from core.jobs import JobContext
from core.mechanism import run
from core.mechanism.requests import (FunctionVectorRequest, TaskVectorRequest, VectorRequest, VectorSeriesRequest,
                                     function_task)
from core.mechanism.types import FunctionVectorResult, TaskVectorResult, VectorPoint
from core.models.types import ModelSpec
from core.runtime import Runtime, ctx_of
from core.tasks import Task, builtin_names, load_builtin


class MechanismLab:
    def __init__(self, runtime: Runtime):
        self.rt = runtime

    def _task(self, req: VectorRequest) -> Task:
        """A built-in task, the request's task data, or a CSV/JSONL path with input,output columns."""
        if req.data is not None:
            return self.rt.task(req.data)
        name = req.task.strip()
        if name in builtin_names():
            return load_builtin(name)
        if Path(name).suffix.lower() in (".csv", ".jsonl", ".json"):
            return self.rt.task(function_task(name))
        return load_builtin(name)  # its own refusal: the known tasks named

    def task_vector(self, req: TaskVectorRequest, job: JobContext | None = None) -> TaskVectorResult:
        """Zero-shot accuracy with the task vector of each layer patched in, beside k-shot and zero-shot."""
        ctx = ctx_of(job)
        handle = self.rt.internals(req.model, "A task vector", job)
        res = run.task_vector(handle, self._task(req), req.k, req.limit, req.seed, req.n_dummy, ctx.progress,
                              ctx.should_stop)
        self.rt.remember("task-vector", req, {"best_layer": res.best_layer, "accuracy": max(res.accuracy),
                                              "icl_accuracy": res.icl_accuracy,
                                              "zero_shot_accuracy": res.zero_shot_accuracy}, ctx,
                         model=handle.info.key, task=res.task, result=res.to_dict())
        return res

    def function_vector(self, req: FunctionVectorRequest, job: JobContext | None = None) -> FunctionVectorResult:
        """Every head's indirect effect, the function vector of the top heads, and its effect layer by layer."""
        ctx = ctx_of(job)
        handle = self.rt.internals(req.model, "A function vector", job)
        res = run.function_vector(handle, self._task(req), req.k, req.limit, req.seed, req.heads, req.layer,
                                  ctx.progress, ctx.should_stop, req.prompt)
        self.rt.remember("function-vector", req, {"layer": res.layer, "fv_accuracy": res.fv_accuracy,
                                                  "zero_shot_accuracy": res.zero_shot_accuracy,
                                                  "icl_accuracy": res.icl_accuracy,
                                                  "top_heads": [f"{a}.{b}" for a, b in res.top_heads]}, ctx,
                         model=handle.info.key, task=res.task, result=res.to_dict())
        return res

    def series(self, req: VectorSeriesRequest, job: JobContext | None = None) -> list[VectorPoint]:
        """Both vectors at every point of a series, each model borrowed from the registry in turn (one in memory
        at a time); a point that cannot be loaded is named and skipped."""
        ctx = ctx_of(job)
        for name in req.names:
            self.rt.check_path(name)
        points = series.series_points(None, req.names[0], req.revision_list) if req.source == "checkpoints" \
            else series.series_points(req.names)
        task = load_builtin(req.task)
        out = []
        for n, point in enumerate(points):
            sub = ctx.sub(n / len(points), (n + 1) / len(points), f"{point.label} ({n + 1}/{len(points)}): ")
            try:
                with self.rt.registry.borrow(ModelSpec(model=point.model, revision=point.revision,
                                                       device=self.rt.config.device)) as handle:
                    tv = run.task_vector(handle, task, req.k, req.limit, req.seed, 16,
                                         (lambda f, m: sub(0.4 * f, m)) if sub else None, ctx.should_stop)
                    fv = run.function_vector(handle, task, req.k, req.limit, req.seed, req.heads, None,
                                             (lambda f, m: sub(0.4 + 0.6 * f, m)) if sub else None,
                                             ctx.should_stop, n_examples=0)
                    step = point.step if point.step is not None else handle.info.step
                    out.append(VectorPoint(point.model, point.revision, step, handle.info.n_params,
                                           tv.zero_shot_accuracy, tv.icl_accuracy, max(tv.accuracy), tv.best_layer,
                                           fv.fv_accuracy, fv.layer, fv.top_heads))
            except ModelLoadError as err:
                out.append(VectorPoint(point.model, point.revision, point.step, 0, error=str(err)))
        self.rt.remember("vector-series", req, {p.label: {"icl": p.icl_accuracy, "task_vector": p.task_vector_accuracy,
                                                          "function_vector": p.function_vector_accuracy}
                                                for p in out}, ctx, model=req.models, task=req.task,
                         result=[p.to_dict() for p in out])
        return out
