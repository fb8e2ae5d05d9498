"""bench/gpu_check.py in its CPU smoke mode (CI has no GPU): every step runs and the summary is one JSON object."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_on_the_cpu():
    res = subprocess.run([sys.executable, "bench/gpu_check.py", "--smoke", "--queries", "12"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    for step in ("build_and_save", "attention_one_head", "integrated_gradients", "fewshot_ours", "fewshot_lm_eval",
                 "lora_throughput"):
        assert "error" not in out[step], (step, out[step])
        assert out[step]["seconds"] >= 0
    assert out["attention_one_head"]["tokens"] >= 128 and out["integrated_gradients"]["converged"]
    assert out["fewshot_lm_eval"]["max_abs_loglik_diff"] < 1e-4  # the same log-likelihoods as lm-eval
    assert out["fewshot_lm_eval"]["ratio_lm_eval_over_ours"] > 1
    assert out["lora_throughput"]["tokens_per_second"] > 0
    assert out["split_over_two_gpus"] == {"skipped": "0 GPU(s)"}
