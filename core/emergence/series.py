"""Abilities across a series of models: scale (sizes of a family) or training (checkpoints of one model).

- ``series_points``: a series from model names (``M1,M2,...``), or the checkpoints
  of one model (an embedded model's, or Hub revisions such as Pythia's ``stepN``).
- ``sweep_series``: the same few-shot configuration through the few-shot engine at
  every point, with several metrics of the same outputs — accuracy / exact match
  (discontinuous) beside the gold answer's log-probability, token edit distance
  and Brier score (continuous); Schaeffer et al. 2023 show the metric can decide
  whether an ability looks sudden. Points load one at a time and are freed after,
  so a series of large models fits on one GPU; results are cached by
  (point, task, configuration, seed), so re-plotting costs nothing.
- ``heads_over_training``: at every checkpoint, the head-role scores of
  ``core.attention.capture`` and the in-context-learning score of Olsson et al. 2022
  (loss on late tokens minus loss on early tokens of the same sequences;
  negative = the context helps).
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from core.attention.capture import head_scores
from core.models.embedded import find_embedded, DEFAULT_MODEL
from core.errors import Cancelled, ModelLoadError, UserError
from core.fewshot.run import run_fewshot
from core.fewshot.types import FewShotConfig
from core.models.loading import Borrow, PathPolicy
from core.models.registry import ModelRegistry
from core.models.presets import PYTHIA_STEPS
from core.emergence.types import METRICS, PYTHIA_SIZES, SERIES_STEPS, HeadsOverTraining, PointResult  # noqa: F401
from core.tasks import Task
from core.models.types import ModelSpec
from core.models.devices import input_device
from core.lazy import lazy, no_grad

torch = lazy("torch")

Progress = Callable[[float, str], None]
assert set(SERIES_STEPS) <= set(PYTHIA_STEPS)


@dataclass(frozen=True)
class Point:
    """One model of a series."""

    model: str
    revision: str | None = None
    step: int | None = None

    @property
    def label(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model


def _step_of(revision: str | None) -> int | None:
    m = re.fullmatch(r"step-?0*(\d+)", revision or "")
    return int(m.group(1)) if m else None


def series_points(models: list[str] | None = None, checkpoints: str | None = None,
                  revisions: list[str] | None = None) -> list[Point]:
    """The points of a series: a list of models, or the checkpoints of one model in training order."""
    if models:
        return [Point(m.strip()) for m in models if m.strip()]
    if not checkpoints:
        raise UserError("Give a series: a list of models, or a model whose checkpoints to use.")
    name = DEFAULT_MODEL if checkpoints == "default" else checkpoints
    emb = find_embedded(name)
    if emb is not None:
        return [Point(emb.name, f"step{c.step}", c.step) for c in emb.checkpoints]
    folder = Path(name)
    if folder.is_dir() and list(folder.glob("step-*")):  # a folder of checkpoints (e.g. live training)
        found = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        return [Point(str(p), None, int(p.name.split("-")[1])) for p in found if (p / "config.json").exists()]
    if revisions is None:
        if "pythia" not in name.lower():
            raise UserError(f"Name the revisions of {name} to use (e.g. step1000,step2000): only Pythia's are known.")
        revisions = [f"step{s}" for s in SERIES_STEPS]
    return [Point(name, r, _step_of(r)) for r in revisions]


def _metric_values(run) -> dict[str, float | None]:
    m = run.metrics
    return {"accuracy": m.accuracy, "gold_logprob": m.mean_gold_logprob,
            "edit_distance": m.mean_edit_distance, "brier": m.brier}


def standalone_borrow(policy: PathPolicy = PathPolicy(), offline: bool = False) -> Borrow:
    """Loads for a series outside the app (CLI, notebooks): a one-model registry, freed after each point."""
    return ModelRegistry(max_models=1, policy=policy, offline=offline).borrow


def weights_stamp(point: Point) -> list:
    """A local folder's weights can change under one name (a run still training writes its final weights
    there): their sizes and modification times join a cached result's key. Embedded and Hub checkpoints
    are fixed by name and revision."""
    from core.models.cache import files_stamp
    path = Path(point.model).expanduser()
    return files_stamp(path, (".safetensors", ".bin", ".pt")) if path.is_dir() else []


class Cache:
    """(point, task, configuration, seed) -> metrics, in memory and optionally in a JSON file."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.data: dict[str, dict] = {}
        self._lock = threading.Lock()  # one engine's cache is shared by its sessions' jobs
        if path and path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (ValueError, OSError):
                self.data = {}

    @staticmethod
    def key(point: Point, task: Task, config: FewShotConfig, seed: int) -> str:
        cfg = asdict(replace(config, seed=seed, name=""))
        return json.dumps([point.model, point.revision, task.name, len(task.test), cfg] + weights_stamp(point),
                          sort_keys=True, default=str)

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        """Keep a result in memory and, where the disk allows, in the file: a full or read-only disk only means
        the next restart computes it again (the sweep itself goes on)."""
        with self._lock:
            self.data[key] = value
            if self.path:  # whole or not at all: a restart never reads half a file
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    tmp.write_text(json.dumps(self.data))
                    os.replace(tmp, self.path)
                except OSError:
                    try:
                        tmp.unlink(missing_ok=True)
                    except OSError:
                        pass


def sweep_series(points: list[Point], task: Task, config: FewShotConfig, seeds: list[int] = (0,),
                 device: str = "auto", borrow: Borrow | None = None,
                 cache: Cache | None = None, progress: Progress | None = None,
                 should_stop: Callable[[], bool] = lambda: False, ablate: str = "") -> list[PointResult]:
    """Run ``config`` on ``task`` at every point (and seed).

    Models come from ``borrow`` (the app's registry: a point not already loaded is loaded under the
    registry's budget and freed after), so one model of the series is in memory at a time.
    ``ablate``: heads (``layer.head,...``) zero-ablated at every point.
    """
    from core.fewshot.scoring import tokenizer_key
    cache = cache or Cache()
    borrow = borrow or standalone_borrow()
    memos: dict[str, dict] = {}  # encodings shared by the points whose tokenizers encode alike
    out = []
    for n, point in enumerate(points):
        if should_stop():
            raise Cancelled("The sweep")
        if progress:
            progress(n / len(points), f"{point.label} ({n + 1}/{len(points)})")
        keys = [Cache.key(point, task, config, s) + (f"|ablate {ablate}" if ablate else "") for s in seeds]
        rows = [cache.get(k) for k in keys]
        if any(r is None for r in rows):
            try:
                with borrow(ModelSpec(model=point.model, revision=point.revision, device=device)) as handle, \
                        _zero_ablated(handle, ablate):
                    memo = memos.setdefault(tokenizer_key(handle.tokenizer), {})
                    for i, (k, s) in enumerate(zip(keys, seeds)):
                        if rows[i] is None:
                            run = run_fewshot(handle, task, replace(config, seed=s), should_stop=should_stop,
                                              memo=memo)
                            rows[i] = {"metrics": _metric_values(run), "chance": run.metrics.chance,
                                       "n_params": handle.info.n_params, "step": handle.info.step}
                            cache.put(k, rows[i])
            except ModelLoadError as err:  # a missing model or checkpoint: say which, go on with the rest
                out.append(PointResult(point.model, point.revision, point.step, 0, dict.fromkeys(METRICS),
                                       dict.fromkeys(METRICS), 0.0, list(seeds), error=str(err)))
                continue
        mean, std = {}, {}
        for m in METRICS:
            vals = [r["metrics"][m] for r in rows if r["metrics"][m] is not None]
            mean[m] = float(np.mean(vals)) if vals else None
            std[m] = float(np.std(vals)) if vals else None
        step = point.step if point.step is not None else rows[0]["step"]
        out.append(PointResult(point.model, point.revision, step, rows[0]["n_params"], mean, std,
                               rows[0]["chance"], list(seeds)))
    if progress:
        progress(1.0, f"{len(points)} points")
    return out


# ---- internal change over training -----------------------------------------------------

EARLY = (4, 12)    # token positions averaged for the "early" loss (Olsson et al. use the 50th token)
LATE = (48, 60)    # ... and for the "late" loss (their 500th), scaled to a 64-token context


def icl_sequences(handle, n: int = 64, seed: int = 0, text: str | None = None) -> torch.Tensor:
    """What the in-context-learning score is measured on.

    The embedded models: their own synthetic training mixture. Any model, given text:
    that text. Otherwise: random tokens repeated (the second half is predictable only
    from the context).
    """
    if text:
        ids = handle.tokenizer(text, return_tensors="pt")["input_ids"][:, : handle.info.context_length or None]
        if ids.shape[1] <= LATE[1]:
            raise UserError(f"The text is {ids.shape[1]} tokens; the score compares tokens {EARLY} with {LATE}, "
                            f"so it needs more than {LATE[1]}.")
        return ids
    if handle.info.vocab_size == _embedded_vocab_size() and handle.tokenizer.convert_tokens_to_ids("w0") == 5:
        from core.build.synthetic import mixture_sample
        return torch.from_numpy(mixture_sample(n, seed))
    from core.attention.capture import repeated_probe
    ids, _ = repeated_probe(handle, 32, n, seed)
    return ids


def _embedded_vocab_size() -> int:
    from core.build.synthetic import Vocab
    return Vocab().size


@no_grad
def late_minus_early(model, ids: torch.Tensor) -> float:
    """Mean loss at late positions minus mean loss at early positions (nats; negative = ICL)."""
    logits = model(ids.to(input_device(model))).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(input_device(model)),
                                             reduction="none")  # (batch, positions)
    n = loss.shape[1]
    late = (min(LATE[0], n - 8), min(LATE[1], n))
    return float(loss[:, late[0]:late[1]].mean() - loss[:, EARLY[0]:EARLY[1]].mean())


def icl_score(handle, ids: torch.Tensor) -> float:
    return late_minus_early(handle.model, ids)


def _zero_ablated(handle, heads_text: str):
    from core.interventions.hooks import ablated, parse_heads
    return ablated(handle.model, parse_heads(heads_text, handle.info.n_layers, handle.info.n_heads))


def _heads_keys(point: Point, text: str | None, ablate: str) -> tuple[str, str]:
    """Cache keys of a point's head roles (the seeded probes: nothing else changes them) and of its ICL
    score (which also depends on the text and the ablated heads)."""
    base = [point.model, point.revision] + weights_stamp(point)
    return (json.dumps(base + ["head roles", "probes seed 0"]),
            json.dumps(base + ["icl score", text or "", ablate or ""]))


def heads_over_training(points: list[Point], device: str = "auto", text: str | None = None,
                        borrow: Borrow | None = None, progress: Progress | None = None,
                        should_stop: Callable[[], bool] = lambda: False, ablate: str = "",
                        cache: Cache | None = None) -> HeadsOverTraining:
    """Head roles and the ICL score at every point; ``ablate``'d heads are zeroed for the ICL score.

    Each checkpoint's head roles come from one capture, kept in ``cache`` with its ICL score: a
    second look (another text or ablation for the ICL score, the tab reopened) loads only the
    checkpoints whose missing part it needs, and none when everything is kept."""
    from core.fewshot.scoring import tokenizer_key
    borrow = borrow or standalone_borrow()
    cache = cache or Cache()
    steps, labels, ind, prev, icl, errors = [], [], [], [], [], []
    sequences: dict[tuple, torch.Tensor] = {}  # the ICL score's sequences, built once per vocabulary
    for n, point in enumerate(points):
        if should_stop():
            raise Cancelled("Measuring the heads")
        if progress:
            progress(n / len(points), f"heads at {point.label}")
        roles_key, icl_key = _heads_keys(point, text, ablate)
        roles, score = cache.get(roles_key), cache.get(icl_key)
        if roles is None or score is None:
            try:
                with borrow(ModelSpec(model=point.model, revision=point.revision, device=device)) as handle:
                    if roles is None:  # head_scores switches the model to eager attention for its one capture
                        scores = head_scores(handle)
                        roles = {"step": handle.info.step, "induction": np.round(scores.induction, 5).tolist(),
                                 "previous_token": np.round(scores.previous_token, 5).tolist()}
                        cache.put(roles_key, roles)
                    if score is None:
                        vocab = (tokenizer_key(handle.tokenizer), handle.info.vocab_size, handle.info.context_length)
                        if vocab not in sequences:
                            sequences[vocab] = icl_sequences(handle, text=text)
                        with _zero_ablated(handle, ablate):
                            score = {"icl_score": round(icl_score(handle, sequences[vocab]), 5)}
                        cache.put(icl_key, score)
            except ModelLoadError as err:
                errors.append(f"{point.label}: {err}")
                continue
        steps.append(point.step if point.step is not None else roles["step"])
        labels.append(point.label)
        ind.append(roles["induction"])
        prev.append(roles["previous_token"])
        icl.append(score["icl_score"])
    if not steps:
        raise UserError("No checkpoint of the series could be loaded: " + " ".join(errors))
    return HeadsOverTraining(steps, labels, ind, prev, icl, errors)
