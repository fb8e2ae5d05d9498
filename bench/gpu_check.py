"""The GPU checks, in one go, printing one JSON summary (run it when a GPU machine is lent; aim: < 8 minutes).

    python bench/gpu_check.py            # a 7B-shaped Llama (random weights, bf16) on the GPU(s)
    python bench/gpu_check.py --smoke    # the same steps on a tiny model on the CPU (CI runs this)

Steps, each timed with its peak accelerator memory:
1. build the model from its config with random weights and save it (no download);
2. one head's attention on 2,048 tokens through the lab's capture (layer L/2, head 0);
3. integrated gradients on a 256-token prompt, to the lab's default convergence;
4. few-shot scoring of 200 queries at k = 8, ours against lm-evaluation-harness's HF backend in the same run
   (same model, CSV and prompts): the ratio and the largest log-likelihood difference;
5. LoRA fine-tuning throughput (tokens/s) through the lab's training loop;
6. with two or more GPUs, the model split over two of them (``device_map="auto"``): attention and scoring
   again, and their difference from the one-GPU results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

SHAPES = {  # Llama-2-7B's shape, and a tiny one for --smoke
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=2000, max_position_embeddings=4096),
}


class Step:
    """Times a step and its peak accelerator memory; a failure is recorded, the other steps go on."""

    def __init__(self, out: dict, name: str, cuda: bool):
        self.out, self.name, self.cuda = out, name, cuda

    def __enter__(self):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        self.rec = self.out.setdefault(self.name, {})
        return self.rec

    def __exit__(self, kind, err, tb):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.rec["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.rec["seconds"] = round(time.perf_counter() - self.t0, 2)
        if err is not None:
            self.rec["error"] = f"{kind.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            traceback.print_exception(kind, err, tb, file=sys.stderr)
        print(f"[gpu_check] {self.name}: {self.rec}", file=sys.stderr, flush=True)
        return True  # record and go on


def build(folder: Path, shape: dict, device: str, dtype) -> Path:
    import torch
    from tiny import bpe_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    tok = bpe_tokenizer(bos=True, vocab_size=1500)
    cfg = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="a tiny model on the CPU: checks the script, not the GPU")
    ap.add_argument("--queries", type=int, default=None)
    args = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    from core.attention.capture import compute_attention
    from core.attribution.attribute import attribute
    from core.models.loading import load_model
    from core.models.types import ModelSpec

    cuda = torch.cuda.is_available() and not args.smoke
    device, dtype_name = ("cuda", "bfloat16") if cuda else ("cpu", "float32")
    dtype = getattr(torch, dtype_name)
    n_gpus = torch.cuda.device_count() if cuda else 0
    sizes = dict(attn_tokens=128, ig_tokens=32, queries=20, k=2, lora_steps=3) if args.smoke else \
        dict(attn_tokens=2048, ig_tokens=256, queries=200, k=8, lora_steps=20)
    if args.queries:
        sizes["queries"] = args.queries
    out: dict = {"mode": "smoke (CPU, tiny model)" if args.smoke else "7B-shaped, random weights",
                 "device": torch.cuda.get_device_name(0) if cuda else "cpu", "gpus": n_gpus,
                 "torch": torch.__version__, "dtype": dtype_name, "sizes": sizes}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = tmp / "model"
        with Step(out, "build_and_save", cuda) as rec:
            build(folder, SHAPES["smoke" if args.smoke else "7b"], device, dtype)
            rec["bytes_on_disk"] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        handle = load_model(ModelSpec(str(folder), device=device, dtype=dtype_name))
        out["n_params"] = handle.info.n_params
        rng = np.random.default_rng(0)
        words = sorted(w for w in handle.tokenizer.get_vocab() if w.isalpha())[:500]

        tokenizer = handle.tokenizer  # kept past `del handle` below, which frees the model's memory

        def text_of(n_tokens: int) -> str:
            text = ""
            while len(tokenizer(text)["input_ids"]) < n_tokens:
                text += " " + " ".join(rng.choice(words, 32))
            ids = tokenizer(text)["input_ids"][1:n_tokens]
            return tokenizer.decode(ids)

        with Step(out, "attention_one_head", cuda) as rec:
            text = text_of(sizes["attn_tokens"])
            layer = handle.info.n_layers // 2
            res = compute_attention(handle, text, [layer], [0])
            rec.update(tokens=res.n_tokens, layer=layer, row_sum_min=float(res.head(layer, 0).sum(-1).min()))
        with Step(out, "integrated_gradients", cuda) as rec:
            prompt = text_of(sizes["ig_tokens"])
            r = attribute(handle, prompt, " " + words[0], "ig")
            rec.update(tokens=len(handle.tokenizer(prompt)["input_ids"]), steps=r.convergence["steps"],
                       delta=round(r.convergence["delta"], 4), converged=r.convergence["converged"])
        from fewshot_speed import write_task
        train, test = write_task(tmp, sizes["k"] + 8, sizes["queries"])
        with Step(out, "fewshot_ours", cuda) as rec:
            ours = _score_ours(handle, train, test, sizes["k"])
            rec.update(seconds_scoring=round(ours[0], 2), accuracy=ours[2], prompt_tokens=ours[3])
        del handle
        _free(cuda)
        with Step(out, "fewshot_lm_eval", cuda) as rec:
            ref = _score_lmeval(folder, train, test, sizes["k"], tmp, device, dtype_name)
            rec.update(seconds_scoring=round(ref[0], 2), accuracy=ref[2])
            rec["ratio_lm_eval_over_ours"] = round(ref[0] / ours[0], 2)
            rec["max_abs_loglik_diff"] = float(np.abs(ours[1] - ref[1]).max())
        _free(cuda)
        with Step(out, "lora_throughput", cuda) as rec:
            from core.finetune.train import train_run
            from core.finetune.types import DataSpec, FinetuneSpec
            spec = FinetuneSpec(model=str(folder), data=DataSpec(train_path=str(train), eval_path=str(test),
                                                                 text_column="text", label_column="label",
                                                                 max_eval=16),
                                objective="causal", method="lora", max_steps=sizes["lora_steps"], batch_size=8,
                                eval_every=sizes["lora_steps"], device=device, precision="auto", merge=False)
            m = train_run(spec, tmp / "lora")
            rec.update(tokens_per_second=m["tokens_per_second"], train_seconds=m["train_seconds"],
                       trainable_params=m["trainable_params"])
        _free(cuda)
        with Step(out, "nnsight_patching", cuda) as rec:  # the trace path against the hooks, same weights
            _nnsight_vs_hooks(rec, folder, device, dtype_name, text_of)
        _free(cuda)
        if n_gpus >= 2:
            with Step(out, "ddp_finetune_two_gpus", cuda) as rec:
                rec.update(_ddp_vs_one(tmp, folder, train, test, sizes["lora_steps"]))
        else:
            out["ddp_finetune_two_gpus"] = {"skipped": f"{n_gpus} GPU(s)"}
        _free(cuda)
        if n_gpus >= 2:
            with Step(out, "split_over_two_gpus", cuda) as rec:
                half = max(1, (sum(f.stat().st_size for f in folder.glob("*.safetensors")) // 2) // 2**30 + 1)
                split = load_model(ModelSpec(str(folder), dtype=dtype_name, device_map="auto",
                                             max_memory=f"0={half}GiB,1={half + 8}GiB,cpu=64GiB"))
                rec["devices"] = sorted(set(split.info.device_map.values()))
                res2 = compute_attention(split, text, [layer], [0])
                rec["attention_max_diff"] = float(np.abs(res2.head(layer, 0) - res.head(layer, 0)).max())
                s2 = _score_ours(split, train, test, sizes["k"])
                rec.update(fewshot_seconds=round(s2[0], 2),
                           max_abs_loglik_diff_vs_one_gpu=float(np.abs(s2[1] - ours[1]).max()))
        else:
            out["split_over_two_gpus"] = {"skipped": f"{n_gpus} GPU(s)"}
    out["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out, indent=2, default=str))


def _nnsight_vs_hooks(rec: dict, folder: Path, device: str, dtype_name: str, text_of) -> None:
    """Activation patching and the logit lens through nnsight traces against the project's hooks, on the same
    loaded weights: the largest differences and both wall times."""
    from dataclasses import replace
    from core.interventions import patching, traced as traced_ops
    from core.models.loading import load_model
    from core.models.traced import load_traced, parse_traced
    from core.models.types import ModelSpec
    try:
        import nnsight  # noqa: F401
    except ImportError:
        rec["skipped"] = "nnsight is not installed"
        return
    handle = load_model(ModelSpec(str(folder), device=device, dtype=dtype_name))
    traced = replace(handle, model=load_traced(parse_traced(f"nnsight:{folder}"), handle.model, handle.tokenizer))
    words = text_of(12).split()
    clean, target = " ".join(words), " " + words[0]
    n = len(handle.tokenizer(clean)["input_ids"])
    corrupt = next((c for c in (" ".join(words[:j] + [w] + words[j + 1:]) for j in range(len(words))
                                for w in words if w != words[j]) if len(handle.tokenizer(c)["input_ids"]) == n),
                   clean)  # one word swapped for another of the same length in tokens
    try:
        t0 = time.perf_counter()
        a = patching.patch(handle, clean, corrupt, target)
        t1 = time.perf_counter()
        b = traced_ops.patch(traced, clean, corrupt, target)
        t2 = time.perf_counter()
    except Exception as err:  # noqa: BLE001 - the random model may tokenise the swap to another length
        rec["note"] = f"patching not compared: {str(err).splitlines()[0]}"
    else:
        rec.update(patch_hooks_s=round(t1 - t0, 2), patch_nnsight_s=round(t2 - t1, 2),
                   patch_max_diff=float(max(np.abs(a.residual - b.residual).max(), np.abs(a.heads - b.heads).max())),
                   positions=len(a.tokens))
    t0 = time.perf_counter()
    la = patching.logit_lens(handle, clean, target)
    t1 = time.perf_counter()
    lb = traced_ops.logit_lens(traced, clean, target)
    t2 = time.perf_counter()
    rec.update(lens_hooks_s=round(t1 - t0, 2), lens_nnsight_s=round(t2 - t1, 2),
               lens_max_diff=float(np.abs(la.final - lb.final).max()))
    del handle, traced


def _ddp_vs_one(tmp: Path, folder: Path, train: Path, test: Path, steps: int) -> dict:
    """LoRA on one GPU against two (DDP, torchrun), the same global batch: throughput and the loss curves."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    out = {}
    curves = {}
    for n in (1, 2):
        run = tmp / f"ddp{n}"
        cmd = [sys.executable, "-m", "core", "finetune", "--model", str(folder), "--train", str(train), "--eval",
               str(test), "--text-column", "text", "--label-column", "label", "--objective", "causal", "--method",
               "lora", "--lora-dropout", "0", "--batch-size", "16", "--max-steps", str(steps), "--eval-every",
               str(steps), "--device", "cuda", "--processes", str(n), "--out", str(run)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if done.returncode:
            return {"error": f"{n} process(es): {done.stderr.strip().splitlines()[-1] if done.stderr else ''}"}
        metrics = json.loads((run / "metrics.json").read_text())
        curves[n] = metrics["train_loss"]
        out[f"tokens_per_second_{n}"] = metrics["tokens_per_second"]
        out[f"wall_s_{n}"] = round(time.perf_counter() - t0, 1)
    out["ratio_two_over_one"] = round(out["tokens_per_second_2"] / out["tokens_per_second_1"], 2)
    out["max_loss_diff"] = max(abs(x - y) for x, y in zip(curves[1], curves[2]))
    return out


def _free(cuda: bool) -> None:
    import gc
    import torch
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def _score_ours(handle, train, test, k):
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.tasks import Template, read_table, task_from_tables
    task = task_from_tables(read_table(train), read_table(test), Template("Review: {text}\nSentiment:"),
                            "label", ["positive", "negative"])
    t0 = time.perf_counter()
    run = run_fewshot(handle, task, FewShotConfig(k=k, selection="first"))
    return time.perf_counter() - t0, np.array([e.choice_logprobs for e in run.examples]), run.metrics.accuracy, \
        run.max_prompt_tokens


def _score_lmeval(folder, train, test, k, tmp, device, dtype_name):
    import fewshot_speed
    return fewshot_speed.run_lmeval(folder, train, test, k, tmp, device, "16", dtype=dtype_name)


if __name__ == "__main__":
    main()
