"""``python -m core info`` answers from the card of an identical earlier load, and loads again when
anything that load depended on changed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.models import info_records
from core.models.types import ModelSpec

ROOT = Path(__file__).resolve().parent.parent
INFO = ("import json, sys, core.cli\ncore.cli.main(['info'] + sys.argv[1:])\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)")


def info(cache: Path, *args) -> tuple[dict, bool]:
    """(the card, whether the process imported torch)."""
    env = dict(os.environ, EMERGENCE_LAB_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", INFO, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout), json.loads(res.stderr.strip().splitlines()[-1])["torch"]


def test_a_second_info_answers_from_the_first_load_and_new_weights_load_again(tmp_path, tiny_models):
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["gpt2"], folder)
    first, loaded = info(tmp_path / "cache", "--model", str(folder), "--device", "cpu")
    assert loaded and first["model_type"] == "gpt2"
    again, loaded = info(tmp_path / "cache", "--model", str(folder), "--device", "cpu")
    assert again == first and not loaded  # no torch, no load
    fresh, loaded = info(tmp_path / "cache", "--model", str(folder), "--device", "cpu", "--fresh")
    assert fresh == first and loaded
    # another request (a dtype, a device) is another record: test_records_are_kept_only_for_weights_on_this_machine

    shutil.rmtree(folder)  # new weights written under the same name
    shutil.copytree(tiny_models["neox"], folder)
    changed, loaded = info(tmp_path / "cache", "--model", str(folder), "--device", "cpu")
    assert loaded and changed["model_type"] == "gpt_neox" and changed["n_params"] != first["n_params"]


def test_records_are_kept_only_for_weights_on_this_machine(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("EMERGENCE_LAB_CACHE", str(tmp_path))
    assert info_records.key(ModelSpec("openai+http://127.0.0.1:9/v1#m")) is None  # a served model
    assert info_records.key(ModelSpec(str(tmp_path / "missing"))) is None  # the load says what is wrong
    kept = info_records.key(ModelSpec(str(tiny_models["llama"])))
    assert kept and kept != info_records.key(ModelSpec(str(tiny_models["llama"]), device="cpu"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the accelerators decide 'auto'
    assert info_records.key(ModelSpec(str(tiny_models["llama"]))) != kept


def test_an_unwritable_cache_only_means_loading_again(tmp_path, tiny_models):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would be")
    card, loaded = info(blocked, "--model", str(tiny_models["gpt2"]), "--device", "cpu")
    assert loaded and card["model_type"] == "gpt2"
