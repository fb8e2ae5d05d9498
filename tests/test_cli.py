"""``python -m core`` as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFO_KEYS = {"n_params", "n_layers", "n_heads", "n_kv_heads", "hidden_size", "context_length",
             "vocab_size", "model_type", "kind", "dtype", "device"}


def run(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_subcommands():
    out = run("--help").stdout
    for sub in ("models", "info", "train-tiny"):
        assert sub in out


def test_models_json():
    models = json.loads(run("models").stdout)
    assert len(models) >= 2 and sum(m["default"] for m in models) == 1
    for m in models:
        assert set(m) == {"name", "path", "checkpoints", "default"}
        steps = [c["step"] for c in m["checkpoints"]]
        assert steps == sorted(steps) and len(steps) >= 6
        assert m["path"] == m["checkpoints"][-1]["path"]
        assert all(Path(c["path"], "config.json").exists() for c in m["checkpoints"])


def test_info_default():
    info = json.loads(run("info", "--model", "default").stdout)
    assert INFO_KEYS <= set(info)
    assert info["kind"] == "causal_lm" and info["model_type"] == "gpt2" and info["n_layers"] >= 2
    assert info["device"] == "cpu" and info["dtype"] == "float32"


def test_info_checkpoint_and_folder(tiny_models):
    info = json.loads(run("info", "--model", "default", "--revision", "step0").stdout)
    assert info["step"] == 0
    info = json.loads(run("info", "--model", str(tiny_models["llama"])).stdout)
    assert (info["n_heads"], info["n_kv_heads"]) == (4, 2)


def test_info_unknown_id_exits_2_with_message():
    proc = run("info", "--model", "nobody-here/no-such-model", ok=False)
    assert proc.returncode == 2
    assert "nobody-here/no-such-model" in proc.stderr and "Traceback" not in proc.stderr
