"""Training throughput of ``core.finetune.train`` against a plain transformers ``Trainer``, same run.

    python bench/finetune_speed.py [--method lora|full] [--epochs 2] [--threads 2]

Both train the same model on the same encoded examples (the built-in
``wordgroups`` task, the same batches' worth of tokens) with the same settings:
AdamW, linear warm-up/decay, gradient clipping 1.0, batch size, epochs, seed,
no evaluation or saving during the timed part. Throughput is non-pad tokens
per second of training. Models: the embedded default (463K parameters, where
fixed per-step costs dominate) and a random 6-layer 384-wide GPT-2 shape
(~12M parameters) with the same tokenizer. On a GPU both use the device's
autocast precision.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models import devices  # noqa: E402
from core.finetune.train import build_model, precision, train_run  # noqa: E402
from core.finetune.data import collate, encode_split, load_task  # noqa: E402
from core.finetune.types import DataSpec, FinetuneSpec  # noqa: E402


def gpt2_shape(folder: Path) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel
    from core.build.synthetic import Vocab, build_tokenizer
    v = Vocab()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=v.size, n_positions=128, n_embd=384, n_layer=6, n_head=6,
                               bos_token_id=v.bos, eos_token_id=v.bos, pad_token_id=v.pad)).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return str(folder)


def ours(spec: FinetuneSpec, out: Path) -> dict:
    m = train_run(spec, out)
    return {"tokens_per_second": m["tokens_per_second"], "seconds": m["train_seconds"], "steps": m["steps"]}


def trainer(spec: FinetuneSpec, out: Path) -> dict:
    from transformers import Trainer, TrainingArguments
    device = devices.resolve_device(spec.device)
    task = load_task(spec)
    model, tok, _ = build_model(spec, task, device)
    enc = encode_split(task, "train", tok, spec.objective, spec.max_length)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            return i

    amp = precision(spec, device)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=spec.batch_size, num_train_epochs=spec.epochs,
        learning_rate=spec.learning_rate, warmup_steps=int(spec.warmup_ratio * (len(enc) // spec.batch_size)),
        weight_decay=spec.weight_decay, max_grad_norm=1.0, lr_scheduler_type="linear", seed=spec.seed,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
        bf16=amp == torch.bfloat16, fp16=amp == torch.float16, use_cpu=device.type == "cpu")
    tokens = sum(len(x) for x in enc.input_ids) * spec.epochs
    trainer = Trainer(model=model, args=args, train_dataset=Rows(),
                      data_collator=lambda idx: collate(enc, idx, tok.pad_token_id, spec.objective))
    t0 = time.time()
    result = trainer.train()
    seconds = time.time() - t0
    return {"tokens_per_second": round(tokens / seconds, 1), "seconds": round(seconds, 2),
            "steps": result.global_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--models", default="default,gpt2-12m")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            model = gpt2_shape(tmp / "gpt2-12m") if name == "gpt2-12m" else name
            spec = FinetuneSpec(model=model, data=DataSpec(task="wordgroups"), objective="causal",
                                method=args.method, epochs=args.epochs, lr=1e-3, batch_size=32,
                                eval_every=10**9)
            ref = trainer(spec, tmp / f"trainer-{name}")  # reference first, then ours
            got = ours(spec, tmp / f"ours-{name}")
            row = {"model": name, "method": args.method, "device": str(devices.resolve_device("auto")),
                   "trainer": ref, "ours": got,
                   "ratio": round(got["tokens_per_second"] / ref["tokens_per_second"], 3)}
            results.append(row)
            print(f"{name:10s} {args.method}: Trainer {ref['tokens_per_second']:>10,.0f} tok/s "
                  f"({ref['steps']} steps, {ref['seconds']:.1f} s) | ours {got['tokens_per_second']:>10,.0f} tok/s "
                  f"({got['steps']} steps, {got['seconds']:.1f} s) | ours/Trainer {row['ratio']:.3f}", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
