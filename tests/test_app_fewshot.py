"""The Few-shot tab through its API: side by side, sweeps, presets, bad input."""
import json

import pytest
from gradio_client.exceptions import AppError

TASK = ["built-in", "recall", None, None, "", "", "", "{key} =", " ", " ; ", ""]
CONFIG = dict(use=True, model="el-2l-128", k=4, selection="first", seed=0, order="as_chosen",
              perturb="gold", flip=0.5, calibrate=False, per_query=False, variant="")
FIELDS = list(CONFIG)


def configs(*overrides):
    out = []
    for n in range(4):
        c = dict(CONFIG, use=n < len(overrides), **(overrides[n] if n < len(overrides) else {}))
        out += [c[f] for f in FIELDS]
    return out


def run(client, *overrides, task=TASK, manual="", limit=0):
    return client.predict(*task, *configs(*overrides), manual, limit, api_name="/fewshot_run")


@pytest.fixture(scope="module", autouse=True)
def loaded(client):
    client.predict("default", "", "auto", "auto", "auto", False, api_name="/load_model")


def test_side_by_side_on_the_same_examples(client):
    note, _plot, summary, bias, table, prompts, example, csv_path, json_path = run(
        client, dict(k=12), dict(k=12, perturb="random"), dict(k=0))
    assert "3 configuration(s) on 48 examples" in note
    acc = [float(a) for a in summary["data"] and [r[3] for r in summary["data"]]]
    assert acc[0] > 0.8 and acc[0] > acc[1] + 0.3 and acc[2] < 0.2  # gold k=12 >> random labels, k=0 at chance
    headers = table["headers"]
    assert {"A prediction", "B prediction", "C prediction", "agree"} <= set(headers)
    assert len(table["data"]) == 48
    assert "fewshot-prompts" in prompts and prompts.count("el-card") == 3
    runs = json.load(open(json_path))
    assert [r["config"]["k"] for r in runs] == [12, 12, 0]
    assert open(csv_path).read().startswith("configuration,model,index")


def test_sweep_accuracy_rises_with_k(client):
    out = client.predict(*TASK, *configs(dict(selection="random")), "", 0, "k", "0,4,12", "0,1", ["accuracy"],
                         api_name="/fewshot_sweep")
    note, plot = out[0], out[1]
    assert "6 runs" in note
    fig = json.loads(plot["plot"])
    ys = fig["data"][0]["y"]
    assert ys[0] < ys[1] < ys[2]
    assert fig["data"][0]["name"] == "A: random"  # the legend names what is held, not the configuration's k=4
    assert fig["layout"]["xaxis"]["title"]["text"]
    exported = json.load(open(next(p for p in out if str(p).endswith(".json"))))
    assert exported[-1]["config"]["name"] == "A: k=12, random"  # a run is named for the k it was scored with


def test_preset_fills_the_configurations(client):
    out = client.predict("min2022", "el-2l-128", api_name="/fewshot_preset")
    explanation, source, task = out[:3]
    assert "random" in explanation and task == "recall"  # the embedded model gets the task it can read


def test_a_preset_changes_only_its_own_fields(client):
    """Brown et al.'s preset has one configuration: B, C and D keep what the user set, and its sweep leaves them out."""
    out = client.predict("brown2020", "el-2l-128", api_name="/fewshot_preset")
    n = len(FIELDS)
    a, others = out[3:3 + n], out[3 + n:3 + 4 * n]
    assert a[0]["value"] is True and a[3]["value"] == "random"
    assert all("value" not in u for u in others)  # untouched: not unticked, labels not reset
    sweep = ("k", "0,4", "0", ["accuracy"], False)
    res = client.predict("brown2020", *TASK, *configs({}, dict(perturb="flip")), "", 0, *sweep,
                         api_name="/fewshot_preset_sweep")
    assert "2 runs" in res[0] and "B kept as you set it and left out of this sweep" in res[0]
    names = [str(t.get("name")) for t in json.loads(res[1]["plot"])["data"]]
    assert any(n.startswith("A") for n in names) and not any(n.startswith("B") for n in names), names


def test_bad_input_is_named_and_the_tab_keeps_working(client):
    with pytest.raises(AppError, match="larger than the pool of 12"):
        run(client, dict(k=40))
    bad_template = list(TASK)
    bad_template[7] = "{nokey} ="
    with pytest.raises(AppError, match="no column 'nokey'"):
        run(client, dict(), task=bad_template)
    with pytest.raises(AppError, match="Upload a train file"):
        run(client, dict(), task=["upload"] + TASK[1:])
    note, *_ = run(client, dict(k=2), limit=5)
    assert "5 examples" in note


def test_preview_shows_prompt_and_token_count(client):
    prompt, tokens = client.predict(*TASK, *configs(dict(k=2)), "", 0, api_name="/fewshot_preview")
    assert prompt.count(" ; ") == 2 and prompt.endswith("=")
    assert "tokens</b> of a 64-token context" in tokens


def test_hub_dataset_offline_says_so(client):
    hub = ["hub dataset", "recall", None, None, "label", "", "", "{text}", " ", "\\n\\n", "someone/sst2"]
    with pytest.raises(AppError, match="needs the network"):
        run(client, dict(), task=hub)
