"""``python -m core`` as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFO_KEYS = {"n_params", "n_layers", "n_heads", "n_kv_heads", "hidden_size", "context_length",
             "vocab_size", "model_type", "kind", "dtype", "device"}


def run_process(*args, ok=True):
    """``python -m core ARGS`` in a fresh process, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def run(*args, ok=True):
    """The same entry point (``core.cli.main``) in this process: no 7-second start-up per call.

    The tests of the entry point itself (help, models, info, an error's exit status) use ``run_process``.
    """
    import contextlib
    import io
    import os
    from core.cli import main
    out, err, code = io.StringIO(), io.StringIO(), 0
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    proc = subprocess.CompletedProcess(["python", "-m", "core", *args], code, out.getvalue(), err.getvalue())
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_subcommands():
    out = run_process("--help").stdout
    for sub in ("models", "info", "train-tiny"):
        assert sub in out


def test_models_json():
    listed = json.loads(run_process("models").stdout)
    models = [m for m in listed if m["source"] == "embedded"]
    assert {m["name"] for m in listed if m["source"] == "packaged"} >= {"smollm2-135m", "minilm-l6"}
    assert len(models) >= 2 and sum(m["default"] for m in models) == 1
    for m in models:
        assert set(m) == {"source", "name", "path", "checkpoints", "default"}
        steps = [c["step"] for c in m["checkpoints"]]
        assert steps == sorted(steps) and len(steps) >= 6
        assert m["path"] == m["checkpoints"][-1]["path"]
        assert all(Path(c["path"], "config.json").exists() for c in m["checkpoints"])


def test_info_default():
    info = json.loads(run("info", "--model", "default").stdout)
    assert INFO_KEYS <= set(info)
    assert info["kind"] == "causal_lm" and info["model_type"] == "gpt_neox" and info["n_layers"] >= 2
    assert info["device"] == "cpu" and info["dtype"] == "float32"


def test_info_checkpoint_and_folder(tiny_models):
    info = json.loads(run("info", "--model", "default", "--revision", "step0").stdout)
    assert info["step"] == 0
    info = json.loads(run("info", "--model", str(tiny_models["llama"])).stdout)
    assert (info["n_heads"], info["n_kv_heads"]) == (4, 2)


def test_info_unknown_id_exits_2_with_message():
    proc = run_process("info", "--model", "nobody-here/no-such-model", ok=False)
    assert proc.returncode == 2
    assert "nobody-here/no-such-model" in proc.stderr and "Traceback" not in proc.stderr


def test_heads_writes_the_documented_json(tmp_path, tiny_models):
    out = tmp_path / "heads.json"
    run("heads", "--model", str(tiny_models["neox"]), "--seq-len", "10", "--seed", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert (data["n_layers"], data["n_heads"]) == (2, 4)
    assert set(data["scores"]) == {"induction", "previous_token", "sink", "entropy"}
    for grid in data["scores"].values():
        assert len(grid) == 2 and all(len(row) == 4 for row in grid)


def test_attention_writes_rows_that_sum_to_one(tmp_path, tiny_models):
    out = tmp_path / "att.json"
    run("attention", "--model", str(tiny_models["gpt2"]), "--text", "the good movie is bad",
        "--layer", "1", "--head", "2", "--out", str(out))
    data = json.loads(out.read_text())
    att = data["attention"]
    assert data["tokens"] == ["the", "good", "movie", "is", "bad"] and len(att) == 5
    for q, row in enumerate(att):
        assert abs(sum(row) - 1) < 1e-5 and all(v == 0 for v in row[q + 1:])  # causal


def test_attention_bad_layer_is_a_clear_error(tiny_models):
    proc = run("attention", "--model", str(tiny_models["gpt2"]), "--text", "the movie", "--layer", "9",
               "--head", "0", ok=False)
    assert proc.returncode == 2 and "Layer 9 is out of range" in proc.stderr


def test_attribute_segments_json(tmp_path, tiny_models):
    out = tmp_path / "attr.json"
    segs = ["the good movie ; ", "the bad movie :"]
    run("attribute", "--model", str(tiny_models["llama"]), "--prompt", "".join(segs), "--target", " positive",
        "--foil", " negative", "--method", "ig", "--granularity", "segment", "--segments", json.dumps(segs),
        "--n-steps", "32", "--out", str(out))
    d = json.loads(out.read_text())
    assert d["segments"] == segs and len(d["scores"]) == 2 and len(d["matrix"]) == 1
    assert isinstance(d["convergence_delta"], float) and isinstance(d["baseline_logprob"], float)
    gap = d["target_logprob"] - d["baseline_logprob"]
    assert abs(sum(d["scores"]) - gap) <= 0.05 * abs(gap)
    run("attribute", "--model", str(tiny_models["llama"]), "--prompt", "".join(segs), "--target", " positive",
        "--method", "ig", "--granularity", "segment", "--segments", json.dumps(segs), "--keep", "-1",
        "--n-steps", "32", "--out", str(out))
    held = json.loads(out.read_text())
    assert held["kept"] == [1] and held["scores"][1] == 0
    proc = run("attribute", "--model", str(tiny_models["llama"]), "--prompt", "a b", "--keep", "last", ok=False)
    assert proc.returncode == 2 and "keep: 'last' is not a comma-separated list of whole numbers" in proc.stderr


def test_attribute_newlines_and_bad_segments(tmp_path, tiny_models):
    out = tmp_path / "attr.json"
    run("attribute", "--model", str(tiny_models["gpt2"]), "--prompt", "the good movie\\nSentiment :",
        "--target", " positive w3", "--method", "ablation", "--granularity", "word", "--out", str(out))
    d = json.loads(out.read_text())
    assert d["segments"][-1] == " :" and len(d["matrix"]) == 2 and d["convergence_delta"] is None
    proc = run("attribute", "--model", str(tiny_models["gpt2"]), "--prompt", "the good movie", "--target",
               " positive", "--granularity", "segment", "--segments", '["the good"]', ok=False)
    assert proc.returncode == 2 and "do not add up" in proc.stderr
