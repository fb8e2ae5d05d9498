"""On the embedded default model's recall prompts, attribution finds the demonstration that matters."""
import numpy as np
import pytest

from core.attribution.attribute import attribute
from core.models.loading import load_model
from core.build.synthetic import recall_items
from core.models.types import ModelSpec
from core.attribution.requests import split_segments


@pytest.fixture(scope="module")
def default():
    return load_model(ModelSpec("default"))


def _holder_ranks_first(default, method, **kw) -> list[bool]:
    hits = []
    for it in recall_items(12, n_pairs=6, seed=77):
        segs = split_segments(it.prompt, " ; ")  # 6 demonstrations "wK = wV ; " then the query "wQ ="
        query_key = segs[-1].split()[0]
        holder = next(i for i, s in enumerate(segs[:-1]) if s.split()[0] == query_key)
        r = attribute(default, it.prompt, it.answer, method, "segment", segments=segs, n_steps=64, **kw)
        hits.append(int(np.argmax(r.scores[:-1])) == holder)
    return hits


@pytest.mark.parametrize("method,keep", [("ablation", ()), ("ig", [-1]), ("gradient_shap", [-1])])
def test_demo_holding_the_queried_key_scores_highest(default, method, keep):
    """Ablation removes one demonstration at a time, the query staying; IG and GradientShap hold the
    query fixed in their baseline so that they answer the same question."""
    hits = _holder_ranks_first(default, method, keep=keep)
    assert sum(hits) >= (10 if method == "gradient_shap" else 12), hits
