"""What a person asks of the mechanism lab: a task vector or a function vector of a task on a model."""
from __future__ import annotations

from dataclasses import dataclass

from core.emergence.requests import SeriesRequest
from core.errors import UserError
from core.fewshot.requests import TaskRequest
from core.request import Request, field


def function_task(path: str) -> TaskRequest:
    """A CSV/JSONL with ``input,output`` columns, as a task (queries: half the file, demonstrations the rest)."""
    return TaskRequest(source="upload", train_file=path, label_column="output", input_template="{input} ->",
                       target_delimiter=" ", fewshot_delimiter="\n").check()


@dataclass(frozen=True)
class VectorRequest(Request):
    """A task scored zero-shot and with k demonstrations, and what the demonstrations write read out.
    The task is a built-in one by name, or ``data``: any task the Few-shot lab takes."""

    model: str = field("", help="a loaded model's key")
    task: str = field("antonyms", help="a built-in task, or a CSV/JSONL file with input,output columns")
    data: TaskRequest | None = field(None, cli=False)
    k: int = field(5, help="demonstrations")
    limit: int | None = field(24, help="queries scored (the first N test rows)")
    seed: int = field(0, help="seed of the demonstration draws")

    def check(self):
        if not 1 <= self.k <= 64:
            raise UserError("k is 1 to 64: the vectors are read from prompts with demonstrations.")
        if self.limit is not None and self.limit <= 0:
            object.__setattr__(self, "limit", None)
        if self.data is None and not (self.task or "").strip():
            raise UserError("Pick a task: a built-in one, or a CSV with input,output columns.")
        return self


@dataclass(frozen=True)
class TaskVectorRequest(VectorRequest):
    n_dummy: int = field(16, help="k-shot prompts of other queries the task vector is averaged over")

    def check(self):
        super().check()
        if not 1 <= self.n_dummy <= 256:
            raise UserError("The task vector is the mean over 1 to 256 prompts.")
        return self


@dataclass(frozen=True)
class FunctionVectorRequest(VectorRequest):
    heads: int | None = field(None, help="heads summed into the function vector (default: scaled to the model)")
    layer: int | None = field(None, help="add it after this layer (default: the layer where it helps most)")
    prompt: str = field("", help="a prompt of your own to continue with and without it, e.g. \"The word 'hot' "
                                 "means\"")

    def check(self):
        super().check()
        if self.heads is not None and self.heads < 1:
            raise UserError("The function vector sums at least one head.")
        return self


@dataclass(frozen=True)
class VectorSeriesRequest(SeriesRequest):
    """Both vectors at every point of a series (checkpoints of one model, or models of several sizes): where the
    mechanism appears beside the ability."""

    task: str = field("antonyms", help="a built-in task")
    k: int = field(5, help="demonstrations")
    limit: int | None = field(24, help="queries scored at each point")
    seed: int = field(0, help="seed of the demonstration draws")
    heads: int | None = field(None, help="heads in the function vector (default: scaled to each model)")

    def check(self):
        super().check()
        if not 1 <= self.k <= 64:
            raise UserError("k is 1 to 64: the vectors are read from prompts with demonstrations.")
        if self.limit is not None and self.limit <= 0:
            object.__setattr__(self, "limit", None)
        return self
