"""Train the tiny GPT-style models that ship in ``assets/models/``.

    python -m core.build.train_tiny --preset default --out assets/models

Each preset is a small GPT-style causal LM (GPT-NeoX, or GPT-2 with `arch="gpt2"`) trained from scratch on the synthetic
mixture of ``core.build.synthetic``. Checkpoints are ordinary transformers folders
(config, tokenizer, fp16 safetensors) named ``step-NNNNN``; a ``training.json``
beside them records the loss curve and the probe scores at every checkpoint.
The same loop drives live training in the app (progress callback, cancel).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.attention.probes import probe_scores, recall_accuracy
from core.build.synthetic import CONTEXT, DEFAULT_SCHEDULE, Vocab, build_tokenizer, mix_at, recall_items, training_batch

Progress = Callable[[float, str], None]


@dataclass
class TinySpec:
    name: str
    arch: str = "gpt2"  # gpt2 (learned positions) | neox (rotary, Pythia's architecture)
    parallel_residual: bool = False  # neox only; parallel blocks put the previous-token heads in
    # the last layer, where no later layer can compose with them
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    seq_len: int = CONTEXT
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    steps: int = 4000
    seed: int = 0
    # dense around the induction head's phase change (steps ~1,500-2,000 in the runs measured)
    checkpoints: tuple[int, ...] = (0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 3000, 4000)
    eval_every: int = 100
    schedule: tuple = DEFAULT_SCHEDULE  # ((from step, mix), ...)


PRESETS = {
    "default": TinySpec(name="el-2l-128", arch="neox"),
    "small": TinySpec(name="el-1l-64", arch="neox", n_layer=1, n_embd=64),
    # The app's live run: the default recipe, stopped once the induction head and recall have
    # appeared (with the earlier data mix, a 64-wide model or batch 32 showed no phase change in 1,500 steps).
    "live": TinySpec(name="live", arch="neox", steps=3000,
                     checkpoints=(0, 500, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 3000), eval_every=100),
}


def build_model(spec: TinySpec, vocab: Vocab = Vocab()):
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(spec.seed)
    if spec.arch == "neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab.size, max_position_embeddings=spec.seq_len, hidden_size=spec.n_embd,
            num_hidden_layers=spec.n_layer, num_attention_heads=spec.n_head,
            intermediate_size=4 * spec.n_embd, bos_token_id=vocab.bos, eos_token_id=vocab.bos,
            pad_token_id=vocab.pad, rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                                     "rope_type": "default"},
            use_parallel_residual=spec.parallel_residual, tie_word_embeddings=True,  # copying is
            attn_implementation="eager",  # near-free with tied embeddings: induction forms far sooner
        )
        return GPTNeoXForCausalLM(cfg)
    cfg = GPT2Config(
        vocab_size=vocab.size, n_positions=spec.seq_len, n_embd=spec.n_embd,
        n_layer=spec.n_layer, n_head=spec.n_head, bos_token_id=vocab.bos,
        eos_token_id=vocab.bos, pad_token_id=vocab.pad, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )
    return GPT2LMHeadModel(cfg)


def _lr_at(spec: TinySpec, step: int) -> float:
    """Warm up, hold, then decay linearly to 10% over the last fifth."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    decay_from = int(0.8 * spec.steps)
    if step < decay_from:
        return spec.lr
    return spec.lr * (1 - 0.9 * (step - decay_from) / max(1, spec.steps - decay_from))


def save_checkpoint(model, tokenizer, path: Path, step: int) -> None:
    half = copy.deepcopy(model).to(torch.float16)
    half.config.dtype = "float16"
    half.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / "step.json").write_text(json.dumps({"step": step}))


_ICL_BATCH: torch.Tensor | None = None


def icl_score(model) -> float:
    """Olsson et al.'s in-context-learning score on a fixed batch of the training mixture
    (``core.emergence.series.late_minus_early``)."""
    global _ICL_BATCH
    from core.emergence.series import late_minus_early
    from core.build.synthetic import mixture_sample
    if _ICL_BATCH is None:
        _ICL_BATCH = torch.from_numpy(mixture_sample(64, 4321))
    return late_minus_early(model, _ICL_BATCH)


def evaluate(model, tokenizer) -> dict:
    model.eval()
    scores = probe_scores(model)
    recall = recall_accuracy(model, tokenizer, recall_items(128, n_pairs=8, seed=99))
    model.train()
    return {
        "top_induction": scores.top_induction,
        "top_previous_token": float(scores.previous_token.max()),
        "induction": scores.induction.round(4).tolist(),
        "recall_accuracy": recall.accuracy, "recall_top1": recall.top1,
        "recall_chance": recall.chance, "icl_score": round(icl_score(model), 5),
    }


def train(spec: TinySpec, out_dir: Path, progress: Progress | None = None,
          should_stop: Callable[[], bool] = lambda: False,
          on_eval: Callable[[dict], None] | None = None) -> dict:
    """Train ``spec``; write checkpoints and ``training.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    tokenizer = build_tokenizer()
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95),
                            weight_decay=spec.weight_decay)
    log: dict = {"spec": asdict(spec), "loss": [], "evals": [], "checkpoints": []}
    t0 = time.time()
    model.train()
    for step in range(spec.steps + 1):
        if step % spec.eval_every == 0 or step in spec.checkpoints:
            recent = log["loss"][-spec.eval_every:]
            ev = {"step": step, "elapsed_s": round(time.time() - t0, 1),
                  "train_loss": round(float(np.mean(recent)), 4) if recent else None, **evaluate(model, tokenizer)}
            log["evals"].append(ev)
            if on_eval:
                on_eval(ev)
        if step in spec.checkpoints:
            path = out_dir / f"step-{step:05d}"
            save_checkpoint(model, tokenizer, path, step)
            log["checkpoints"].append({"step": step, "path": path.name})
        if step == spec.steps or should_stop():
            break
        ids = torch.from_numpy(training_batch(rng, spec.batch, spec.seq_len, mix_at(spec.schedule, step)))
        loss = model(ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = _lr_at(spec, step)
        opt.step()
        log["loss"].append(round(loss.item(), 4))
        if progress and step % 10 == 0:
            progress(step / spec.steps, f"step {step}/{spec.steps} loss {loss.item():.3f}")
    log["elapsed_s"] = round(time.time() - t0, 1)
    (out_dir / "training.json").write_text(json.dumps(log))
    return log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--out", default="assets/models", help="parent folder; the model goes in OUT/NAME")
    ap.add_argument("--steps", type=int, help="override the preset's number of steps")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--progress", help="append one JSON line per evaluation to this file (live view)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = copy.deepcopy(PRESETS[args.preset])
    if args.steps:
        spec.steps = args.steps
        spec.checkpoints = tuple(sorted({s for s in spec.checkpoints if s < args.steps} | {args.steps}))

    def show(ev: dict) -> None:
        if args.progress:
            with open(args.progress, "a") as f:
                f.write(json.dumps({k: v for k, v in ev.items() if k != "induction"}) + "\n")
        print(f"step {ev['step']:5d} {ev['elapsed_s']:7.1f}s induction {ev['top_induction']:.3f} "
              f"prev {ev['top_previous_token']:.3f} recall {ev['recall_accuracy']:.3f} "
              f"(top1 {ev['recall_top1']:.3f}, chance {ev['recall_chance']:.3f})", flush=True)

    train(spec, Path(args.out) / spec.name, on_eval=show)


if __name__ == "__main__":
    main()
