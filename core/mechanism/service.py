"""The mechanism lab: task vectors and function vectors of a task on a model — where in the residual stream the
demonstrations' task is carried, which heads carry it, and whether it performs the task without them."""
from __future__ import annotations

from pathlib import Path

from core.jobs import JobContext
from core.mechanism import run
from core.mechanism.requests import FunctionVectorRequest, TaskVectorRequest, VectorRequest, function_task
from core.mechanism.types import FunctionVectorResult, TaskVectorResult
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
        handle = self.rt.local(req.model, "A task vector", job)
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
        handle = self.rt.local(req.model, "A function vector", job)
        res = run.function_vector(handle, self._task(req), req.k, req.limit, req.seed, req.heads, req.layer,
                                  ctx.progress, ctx.should_stop, req.prompt)
        self.rt.remember("function-vector", req, {"layer": res.layer, "fv_accuracy": res.fv_accuracy,
                                                  "zero_shot_accuracy": res.zero_shot_accuracy,
                                                  "icl_accuracy": res.icl_accuracy,
                                                  "top_heads": [f"{a}.{b}" for a, b in res.top_heads]}, ctx,
                         model=handle.info.key, task=res.task, result=res.to_dict())
        return res
