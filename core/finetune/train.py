"""Fine-tuning: full, LoRA, IA3, prefix or prompt tuning (``core.finetune.methods``); sequence
classification, prompt -> completion or token classification (``core.finetune.evaluate``); resumable.

``train_run(spec, run_dir)`` trains in the calling process and writes everything a
run is into ``run_dir``:

- ``spec.json``       the ``FinetuneSpec``;
- ``progress.jsonl``  one JSON event per line (start, train, eval, checkpoint, end),
                      which the app polls and ``read_status`` folds into a ``FinetuneStatus``;
- ``checkpoints/step-N/`` weights (a peft adapter alone, or the full model, as safetensors),
                      tokenizer and ``trainer_state.pt`` (optimizer, schedule, RNG, step);
                      every checkpoint loads as a model (``core.models.loading`` merges a LoRA/IA3
                      adapter into its base on load, and puts virtual tokens in front of it). The last two are kept;
- ``model/``          full, LoRA, IA3: the final model (adapters merged) — a plain transformers folder;
- ``adapter/``        every peft method: the adapter on its own (prefix/prompt tuning: the run's model);
- ``metrics.json``    ``{eval_accuracy, [eval_f1], train_loss, eval_loss, steps, tokens_per_second,
                      trainable_params, peak_memory_bytes, ...}``.

The app runs it in a subprocess (``core.finetune.jobs``) so that a crash or an
out-of-memory error in training is reported and never takes the app down.
A causal run is evaluated by the few-shot scorer (``core.fewshot.scoring``) at k = 0, so its held-out
accuracy here is exactly what the Few-shot tab reports for it.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.models import devices
from core.errors import UserError
from core.finetune import methods, parallel
from core.finetune.data import collate, encode_split, load_task
from core.finetune.evaluate import IGNORE, evaluate, forward, loss_of
from core.finetune.runs import last_checkpoint, run_owner
from core.finetune.schedule import batches_per_epoch, epoch_order, eval_due, lr_schedule, planned_steps
from core.finetune.types import FinetuneSpec

KEEP_CHECKPOINTS = 2
Events = Callable[[dict], None]


# ---- model -----------------------------------------------------------------------------

def _resolve_base(spec: FinetuneSpec, offline: bool):
    from core.models.loading import resolve
    from core.models.types import ModelSpec
    return resolve(ModelSpec(model=spec.model, revision=spec.revision), offline=offline)


def build_model(spec: FinetuneSpec, task, device: torch.device, offline: bool = False):
    """(model, tokenizer, base kind) ready to train by ``spec.method`` (``core.finetune.methods.wrap``)."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                                                        MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES)
    from core.models.loading import detect_kind, is_encoder

    res = _resolve_base(spec, offline)
    common = dict(revision=res.revision, local_files_only=res.local_files_only)
    split = {}
    if spec.device_map:  # the frozen base split across devices (accelerate); the adapters follow their layers
        from core.models.loading import _split_kwargs
        from core.models.types import ModelSpec
        split = _split_kwargs(ModelSpec(model=spec.model, device_map=spec.device_map, max_memory=spec.max_memory))
    config = AutoConfig.from_pretrained(res.path, **common)
    kind = detect_kind(config)
    tokenizer = AutoTokenizer.from_pretrained(res.path, **common)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if spec.objective == "causal":
        if kind != "causal_lm" or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(f"{spec.model} is a {kind.replace('_', ' ')} model; the causal objective needs a "
                            "causal language model (GPT-2, Pythia, Llama, ...). Use the classification objective.")
        model = AutoModelForCausalLM.from_pretrained(res.path, config=config, dtype=torch.float32, **common, **split)
    else:
        token = spec.objective == "token-classification"
        names = MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES if token else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
        if config.model_type not in names:
            raise UserError(f"{spec.model} ({config.model_type}) has no "
                            f"{'token' if token else 'sequence'}-classification head in transformers"
                            + ("." if token else "; use the causal objective."))
        labels = list(task.labels if token else task.choices)
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {lab: i for i, lab in enumerate(labels)}
        config.pad_token_id = tokenizer.pad_token_id
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        model = auto.from_pretrained(res.path, config=config, dtype=torch.float32, ignore_mismatched_sizes=True,
                                     **common, **split)
    model.config.pad_token_id = tokenizer.pad_token_id
    if spec.gradient_checkpointing and device.type == "cuda":
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model = methods.wrap(model, spec, causal=not is_encoder(config))
    return (model if spec.device_map else model.to(device)), tokenizer, kind


def precision(spec: FinetuneSpec, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32."""
    if device.type != "cuda" or spec.precision == "fp32":
        return None
    if spec.precision == "bf16" or (spec.precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


# ---- checkpoints ---------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, state: dict) -> Path:
    """Write into a temporary folder, then rename: a crash mid-save never corrupts the last checkpoint."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    methods.check_disk(root, model)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    methods.save_weights(model, tokenizer, tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "state": state}, tmp / "trainer_state.pt")
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# ---- training ------------------------------------------------------------------------------

def _events(run_dir: Path, extra: Events | None) -> Events:
    path = run_dir / "progress.jsonl"

    def emit(event: dict) -> None:
        event = {"time": round(time.time(), 3), **event}
        with path.open("a") as f:
            f.write(json.dumps(event) + "\n")
        if extra:
            extra(event)
    return emit


def train_run(spec: FinetuneSpec | None, run_dir: Path | str, resume: bool = False, offline: bool = False,
              should_stop: Callable[[], bool] = lambda: False, on_event: Events | None = None,
              time_limit_s: float | None = None) -> dict:
    """Train ``spec`` into ``run_dir`` (see the module doc); return the final metrics.

    ``resume=True`` reads the spec from ``run_dir`` and continues from its last checkpoint.
    Any failure is also written to the progress file as an ``end`` event, so that a
    watcher (the app) can show it.
    """
    run_dir = Path(run_dir)
    ranks = parallel.Ranks()
    if parallel.launched():
        known = spec or FinetuneSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        ranks = parallel.join(devices.resolve_device(known.device).type, known.parallel)
    try:
        return _train_run(spec, run_dir, resume, offline, should_stop, on_event, time_limit_s, ranks)
    finally:
        ranks.close()


def _train_run(spec: FinetuneSpec | None, run_dir: Path, resume: bool, offline: bool,
               should_stop: Callable[[], bool], on_event: Events | None, time_limit_s: float | None,
               ranks: "parallel.Ranks") -> dict:
    if resume:
        if not (run_dir / "spec.json").exists():
            raise UserError(f"{run_dir} is not a run folder (no spec.json).")
        spec = FinetuneSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        if (run_dir / "metrics.json").exists():
            raise UserError(f"The run in {run_dir} has already finished; its model is in {run_dir / 'model'}.")
    else:
        spec.check()
        if ranks.main:
            if (run_dir / "progress.jsonl").exists():
                raise UserError(f"{run_dir} already holds a run. Pick a new folder, or resume it with --resume.")
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"Cannot create the run folder {run_dir}: {err.strerror}.") from None
            (run_dir / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
        ranks.barrier()
    emit = _events(run_dir, on_event) if ranks.main else (lambda event: None)  # rank 0 speaks for the run
    try:
        return _train(spec, run_dir, resume, offline, should_stop, emit, time_limit_s, ranks)
    except UserError as err:
        emit({"event": "end", "state": "failed", "message": str(err)})
        raise
    except torch.OutOfMemoryError:
        msg = ("Out of memory while training. Lower the batch size or the maximum length, use LoRA, or turn on "
               "gradient checkpointing; checkpoints already saved are kept.")
        emit({"event": "end", "state": "failed", "message": msg})
        raise UserError(msg) from None
    except Exception as err:
        emit({"event": "end", "state": "failed", "message": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})
        raise


class _Saved:
    """An optimiser state gathered across ranks, saved where a checkpoint saves ``optimizer.state_dict()``."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def _units(batch: dict, objective: str) -> int:
    """What the loss is a mean over: examples (classification), scored target tokens (causal, tags)."""
    labels = batch["labels"]
    if objective == "classification":
        return int(labels.shape[0])
    return int(((labels[:, 1:] if objective == "causal" else labels) != IGNORE).sum())


def _train(spec: FinetuneSpec, run_dir: Path, resume: bool, offline: bool,
           should_stop: Callable[[], bool], emit: Events, time_limit_s: float | None = None,
           ranks: "parallel.Ranks" = parallel.Ranks()) -> dict:
    torch.manual_seed(spec.seed)
    device = parallel.local_device(devices.resolve_device(spec.device), ranks)
    task = load_task(spec, offline)
    model, tokenizer, _ = build_model(spec, task, device, offline)
    if spec.device_map:
        device = devices.input_device(model)
    train_enc = encode_split(task, "train", tokenizer, spec.objective, spec.max_length)
    eval_enc = encode_split(task, "test", tokenizer, spec.objective, spec.max_length)

    total = planned_steps(spec, len(train_enc))
    per_epoch = batches_per_epoch(len(train_enc), spec.batch_size)
    n_trainable, n_total = methods.parameter_counts(model)
    ckpt = None
    if resume:
        ckpt = last_checkpoint(run_dir)
        if ckpt is None:
            raise UserError(f"{run_dir} has no checkpoint to resume from.")
        methods.load_trainable(model, ckpt, spec.method)  # the whole weights, before any sharding
    # FSDP: rank 0 keeps a whole copy in CPU memory to evaluate and save (filled by a gather when needed)
    whole = copy.deepcopy(model).cpu() if ranks.sharded and ranks.main else None
    trained = ranks.wrap(model, device)  # DDP or FSDP across processes; the model itself in one
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP: this rank's shards
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    lr = spec.learning_rate_for(n_total)  # none given: the default for this model's size
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = lr_schedule(optimizer, int(spec.warmup_ratio * total), total)
    amp = precision(spec, device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    state = {"step": 0, "micro": 0, "train_loss": [], "evals": [], "tokens": 0, "train_seconds": 0.0,
             "n_train": len(train_enc)}

    if resume:
        saved = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        if ranks.sharded:
            parallel.load_full_optimizer_state(model, optimizer, saved["optimizer"])
        else:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        emit({"event": "resume", "step": state["step"], "checkpoint": str(ckpt)})

    labels = list(task.labels) if spec.objective == "token-classification" else (
        list(task.choices) if task.choices else None)
    emit({"event": "start", "total_steps": total, "step": state["step"], "n_train": len(train_enc),
          "n_eval": len(eval_enc), "trainable_params": n_trainable, "total_params": n_total,
          "method": spec.method, "objective": spec.objective, "lr": lr, "lr_default": spec.lr is None,
          "device": str(device), "precision": str(amp).replace("torch.", "") if amp else "fp32",
          "processes": ranks.world,
          "task": task.name, "choices": labels})

    model.train()
    pad = tokenizer.pad_token_id
    t_last = last_emit = t_start = time.time()
    state_step_at_start = state["step"]
    window: list[float] = []  # losses since the last train event (long runs report their mean)
    held_out: list = []        # the final evaluation's per-example answers

    times = state.setdefault("times", {"train": 0.0, "eval": 0.0, "checkpoint": 0.0, "last_overhead": 0.0})

    def checkpoint() -> None:
        saving, opt = model, optimizer
        if ranks.sharded:  # every rank takes part in gathering the weights and the optimiser state
            parallel.gather_into(model, whole)
            saving, opt = whole, _Saved(parallel.full_optimizer_state(model, optimizer))
        if ranks.main:  # every rank holds the same weights and optimiser state: one writes them
            t0 = time.time()
            path = save_checkpoint(run_dir, state["step"], saving, tokenizer, opt, scheduler, state)
            times["checkpoint"] += time.time() - t0
            emit({"event": "checkpoint", "step": state["step"], "path": str(path),
                  **{f"time_{k}_s": round(v, 2) for k, v in times.items() if k != "last_overhead"}})
        ranks.barrier()

    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    while state["step"] < total:
        over_time = ranks.anyone(deadline is not None and time.monotonic() > deadline)
        if ranks.anyone(should_stop()) or over_time:
            checkpoint()
            message = (f"Stopped at step {state['step']}: this server allows {time_limit_s / 60:g} minutes a run. "
                       "The last checkpoint is saved; resume continues from it.") if over_time else \
                f"Cancelled at step {state['step']}; the last checkpoint is saved."
            emit({"event": "end", "state": "cancelled", "step": state["step"], "message": message})
            return {}
        loss_sum, n_tok = 0.0, 0
        for _ in range(spec.grad_accum):
            epoch, pos = divmod(state["micro"], per_epoch)
            order = epoch_order(len(train_enc), spec.seed, epoch)
            index = order[pos * spec.batch_size:(pos + 1) * spec.batch_size]
            mine = ranks.shard(index)  # this rank's rows of the global batch
            batch = {k: v.to(device) for k, v in collate(train_enc, mine or index[:1], pad, spec.objective).items()}
            units = _units(batch, spec.objective) if mine else 0
            # the rank's mean loss, weighted by its share of the batch's units: the average DDP takes of the
            # ranks' gradients is then the gradient of the whole batch's mean loss (one process: weight 1)
            weight = units * ranks.world / max(ranks.total(units), 1) if ranks.parallel else 1.0
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = loss_of(forward(trained, batch), batch["labels"], spec.objective) / spec.grad_accum
            loss = loss * weight if weight else loss * 0.0
            (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += ranks.total(loss.item()) / ranks.world
            n_tok += int(ranks.total(int(batch["attention_mask"].sum()) if mine else 0))
            state["micro"] += 1
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += n_tok
        state["train_loss"].append((state["step"], round(loss_sum, 5)))
        now = time.time()
        state["train_seconds"] += now - t_last
        times["train"] += now - t_last
        window.append(loss_sum)
        if total <= 2000 or now - last_emit >= 0.5 or state["step"] == total:
            elapsed = now - t_start
            done = state["step"] - state_step_at_start
            emit({"event": "train", "step": state["step"], "loss": round(float(np.mean(window)), 5),
                  "lr": scheduler.get_last_lr()[0], "epoch": round(state["micro"] / per_epoch, 3),
                  "tokens_per_second": round(state["tokens"] / max(1e-9, state["train_seconds"]), 1),
                  "eta_s": round(elapsed / max(1, done) * (total - state["step"]), 1),
                  "gpu_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
                  **{f"time_{k}_s": round(v, 2) for k, v in times.items() if k != "last_overhead"}})
            window, last_emit = [], now
        t_last = now
        if ranks.anyone(ranks.main and eval_due(state["step"], total, spec.eval_every, times)):
            t0 = time.time()
            if ranks.sharded:
                parallel.gather_into(model, whole)
            if ranks.main:  # the held-out set once, on rank 0, while the others wait at the checkpoint
                final = [] if state["step"] >= total else None  # the last evaluation keeps every answer
                judged, where = (whole, torch.device("cpu")) if ranks.sharded else (model, device)
                ev = {"step": state["step"], **evaluate(judged, tokenizer, task, eval_enc, spec.objective,
                                                        spec.batch_size, where, final)}
                if final is not None:
                    held_out = final
                state["evals"].append(ev)
                emit({"event": "eval", **ev})
            times["eval"] += time.time() - t0
            checkpoint()
            t_last = time.time()  # evaluation and saving are not training time
            times["last_overhead"] = t_last - t0

    if ranks.sharded:
        parallel.gather_into(model, whole)
    if not ranks.main:
        ranks.barrier()  # rank 0 writes the model
        return {}
    metrics = finish(spec, run_dir, whole if ranks.sharded else model, tokenizer, state, held_out)
    ranks.barrier()
    emit({"event": "end", "state": "finished", "step": state["step"], "metrics": metrics,
          "message": "Finished: held-out " + (f"entity F1 {metrics['eval_f1']:.3f}" if metrics.get("eval_f1")
                                               is not None else f"accuracy {metrics['eval_accuracy']:.3f}") + "."})
    return metrics


def finish(spec: FinetuneSpec, run_dir: Path, model, tokenizer, state: dict, held_out: list | None = None) -> dict:
    """Write the final model (and adapter) and ``metrics.json``."""
    device = devices.input_device(model)
    trainable, total = methods.parameter_counts(model)  # before a merge folds the adapters away
    peak, peak_kind = methods.peak_memory(device)
    model_path = methods.save_final(model, tokenizer, spec, run_dir)
    last = state["evals"][-1] if state["evals"] else {}
    metrics = {
        "eval_accuracy": last.get("eval_accuracy"),
        **({k: last.get(k) for k in ("eval_f1", "eval_precision", "eval_recall")}
           if spec.objective == "token-classification" else {}),
        "train_loss": [loss for _, loss in state["train_loss"]],
        "eval_loss": [e["eval_loss"] for e in state["evals"]],
        "eval_accuracy_curve": [e["eval_accuracy"] for e in state["evals"]],
        "eval_f1_curve": [e.get("eval_f1") for e in state["evals"]] if spec.objective == "token-classification" else None,
        "eval_steps": [e["step"] for e in state["evals"]],
        "steps": state["step"],
        "tokens_per_second": round(state["tokens"] / max(1e-9, state["train_seconds"]), 1),
        "train_seconds": round(state["train_seconds"], 2),
        "trainable_params": trainable, "total_params": total,
        "trainable_share": trainable / total if trainable and total else None,
        "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
        "n_train": state.get("n_train"), "model_path": str(model_path),
        "objective": spec.objective, "method": spec.method, "model": spec.model,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _remember(spec, run_dir, metrics, held_out or [])
    return metrics


def _remember(spec: FinetuneSpec, run_dir: Path, metrics: dict, held_out: list) -> None:
    """Record the finished run, with every held-out example's answer, in the experiment history of its runs
    folder (the app's History tab lists it)."""
    from core.history.store import Example, History
    from core.models.cache import weights_sha256
    keep = ("eval_accuracy", "eval_f1", "steps", "trainable_params", "total_params", "tokens_per_second",
            "train_seconds", "peak_memory_bytes", "model_path", "method", "objective")
    try:
        History(run_dir.parent).record(
            "finetune", {**spec.to_dict(), "run": run_dir.name, "weights_sha256": {"saved model": weights_sha256(
                str(Path(metrics["model_path"])))}}, {k: metrics.get(k) for k in keep}, model=spec.model,
            task=spec.data.name, elapsed_s=metrics["train_seconds"],
            name=run_dir.name, examples=[Example(spec.method, e.index, e.input, e.gold, e.prediction, e.scores,
                                                 e.correct) for e in held_out], owner=run_owner(run_dir))
    except (UserError, OSError, KeyError):  # an unwritable history never fails a finished run
        pass
