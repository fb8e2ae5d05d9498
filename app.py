"""Emergence Lab: ``python app.py`` serves the app at http://127.0.0.1:7860."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from core.models.types import DEVICES, DTYPES, AppConfig, Limits


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Emergence Lab: attention, attribution and few-shot "
                                             "experiments on language models, in the browser.")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="make a public Gradio share link")
    ap.add_argument("--model", default="default",
                    help="model to load at start: 'default', an embedded name, a Hub id or a folder; "
                         "'none' to start empty")
    ap.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} or cuda:N")
    ap.add_argument("--dtype", default="auto", choices=DTYPES)
    ap.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    ap.add_argument("--endpoint", action="append", default=[],
                    help="a served model's base URL (e.g. http://gpu-box:8000/v1) that a --host/--share server may "
                         "call (repeatable); append ';key=ENV_VAR' to send that variable as its API key. On "
                         "localhost any endpoint may be named; on an exposed server keys come only from here")
    ap.add_argument("--endpoint-timeout", type=float, default=20.0,
                    help="seconds a served model may take to connect or answer one request before it fails")
    ap.add_argument("--ndif-key-env", metavar="ENV_VAR",
                    help="allow 'ndif:<Hub id>' models (run remotely through nnsight on NDIF) with the API key held "
                         "in this environment variable; an exposed server refuses NDIF without it (localhost "
                         "reads NDIF_API_KEY by default)")
    ap.add_argument("--trust-remote-code-for", action="append", default=[], metavar="ID[,ID...]",
                    help="models (Hub ids or folders) whose repository code an exposed server may run; "
                         "visitors cannot turn remote code on")
    ap.add_argument("--auth-file", type=Path,
                    help="visitors log in: a file of 'user:password' lines; each user has their own History")
    ap.add_argument("--operator", action="append", default=[], metavar="USER",
                    help="with --auth-file: a user who may stop any fine-tuning run and see every run")
    ap.add_argument("--max-runs-per-session", type=int,
                    help="fine-tuning runs a session may have queued or running (exposed default: 1)")
    ap.add_argument("--max-train-steps", type=int, help="steps of one fine-tuning run (exposed default: 5000)")
    ap.add_argument("--max-train-minutes", type=float,
                    help="minutes of one fine-tuning run before it is stopped with a checkpoint (exposed default: 30)")
    ap.add_argument("--max-live-runs", type=int, help="live-training runs at once (exposed default: 2)")
    ap.add_argument("--max-train-processes", type=int,
                    help="processes one fine-tuning run may train with, data parallel (exposed default: 1)")
    ap.add_argument("--device-map", help="'auto': split every model's layers over the GPUs, the CPU and disk")
    ap.add_argument("--max-memory", help="with --device-map: memory per device, e.g. '0=20GiB,1=20GiB,cpu=64GiB'")
    ap.add_argument("--offload-folder", help="with --device-map: where layers that fit nowhere go on disk")
    ap.add_argument("--model-dir", action="append", default=[], type=Path,
                    help="folder of local models a --host/--share server may load (repeatable)")
    ap.add_argument("--memory-budget-gb", type=float, help="evict models beyond this much memory")
    ap.add_argument("--max-models", type=int, default=3, help="models kept loaded at once")
    ap.add_argument("--runs-dir", type=Path, help="where fine-tuning runs are written (default: ./runs)")
    ap.add_argument("--cache-dir", type=Path,
                    help="where GGUF files are converted and packaged models unpacked (default ~/.cache/emergence-lab)")
    return ap


def parse_args(argv: list[str] | None = None) -> AppConfig:
    return config_from(build_parser().parse_args(argv))


def config_from(a: argparse.Namespace) -> AppConfig:
    if a.cache_dir:
        from core.models.cache import set_cache_root
        set_cache_root(a.cache_dir)
    extra = {"runs_dir": a.runs_dir.resolve()} if a.runs_dir else {}
    if a.operator and not a.auth_file:
        raise SystemExit("--operator names a user of --auth-file")
    given = dict(runs_per_session=a.max_runs_per_session, train_steps=a.max_train_steps,
                 train_minutes=a.max_train_minutes, live_runs=a.max_live_runs,
                 train_processes=a.max_train_processes)
    cfg = AppConfig(host=a.host, port=a.port, share=a.share,
                    model=None if a.model.lower() == "none" else a.model, device=a.device,
                    dtype=a.dtype, offline=a.offline, model_dirs=tuple(a.model_dir),
                    memory_budget_gb=a.memory_budget_gb, max_models=a.max_models, device_map=a.device_map,
                    max_memory=a.max_memory, offload_folder=a.offload_folder, endpoints=tuple(a.endpoint),
                    endpoint_timeout_s=a.endpoint_timeout, ndif_key_env=a.ndif_key_env,
                    trust_remote_code_for=tuple(i.strip() for v in a.trust_remote_code_for for i in v.split(",")
                                                if i.strip()),
                    auth=a.auth_file is not None, operators=tuple(a.operator), **extra)
    if any(v is not None for v in given.values()):  # what is not given keeps the default of this kind of server
        base = cfg.work_limits
        cfg = replace(cfg, limits=Limits(**{k: v if v is not None else getattr(base, k) for k, v in given.items()}))
    return cfg


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """'user:password' per line (blank lines and # comments skipped)."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise SystemExit(f"{path}:{n}: expected 'user:password'")
        pairs.append((user.strip(), password))
    if not pairs:
        raise SystemExit(f"{path}: no 'user:password' lines")
    return pairs


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = config_from(args)
    auth = read_auth_file(args.auth_file) if args.auth_file else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if cfg.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    from core.engine import Engine
    from ui.app import build_app, launch_kwargs

    engine = Engine(cfg)
    engine.models.expect_default()  # the Model tab says "loading…" until it is in
    if cfg.exposed:
        logging.warning("serving beyond localhost: local model paths are limited to %s",
                        ", ".join(map(str, ("assets/models", *cfg.model_dirs))))
    demo = build_app(engine)  # gr.Blocks queues by default; .queue() again rebuilt its FastAPI app (0.35 s)
    demo.launch(prevent_thread_lock=True, **launch_kwargs(engine, auth))
    engine.models.load_default_in_background()  # after the page answers: loading beside the build slowed both
    _report_default(engine)
    demo.block_thread()


def _report_default(engine) -> None:
    """Log when the default model is in (or why not): the page was answering meanwhile."""
    import time
    while engine.models.default_status() and engine.models.default_status().startswith("Loading"):
        time.sleep(0.1)
    if engine.runtime.default.error:
        logging.warning("could not load %s: %s", engine.config.model, engine.runtime.default.error)
    for info in engine.models.loaded():
        logging.info("loaded %s (%s params) on %s", info.key, info.n_params, info.device)


if __name__ == "__main__":
    sys.exit(main())
