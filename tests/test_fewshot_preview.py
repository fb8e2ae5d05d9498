"""The few-shot preview is the run's own first prompt, whatever the selection (it once rebuilt prompts itself,
without the nearest-neighbour similarity, and refused 'nearest' while the run accepted it)."""
import pytest

from core.engine import Engine
from core.fewshot.requests import FewShotRequest
from core.models.requests import LoadRequest
from core.models.types import AppConfig


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = Engine(AppConfig(model=None, runs_dir=tmp_path_factory.mktemp("runs"), offline=True))
    e.models.load(LoadRequest(model="default"))
    return e


@pytest.mark.parametrize("selection,per_query", [("first", False), ("random", False), ("random", True),
                                                 ("nearest", False), ("balanced", False)])
def test_the_preview_is_the_runs_first_prompt(engine, selection, per_query):
    req = FewShotRequest.from_mapping({
        "task": {"source": "built-in", "name": "recall", "input_template": "{key} =", "target_delimiter": " ",
                 "fewshot_delimiter": " ; "},
        "configs": [dict(model="el-2l-128", k=4, selection=selection, seed=3, per_query=per_query)], "limit": 6})
    prompt, tokens, context = engine.fewshot.preview(req)
    run = engine.fewshot.run(req)[0]
    assert prompt == run.examples[0].prompt
    assert len(tokens) > 4 and context == 64
