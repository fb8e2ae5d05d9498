"""A server a class shares, as a teacher starts it and visitors meet it: ``python app.py --host 0.0.0.0`` in its
own process (probed on 127.0.0.1 only), with a remote-code model in ``--model-dir`` and in a local Hub cache, an
allowed endpoint with the operator's key and a hung one. No client can run code, read a local folder through a
dataset name or name an environment variable; each session has its own default model and History; a Cancel
holds while a job waits; a hanging load holds nobody up; CSV exports are escaped."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import _free_port, wait_until
from fewshot_form import TASK, configs
from served_stub import Silent, Stub
from test_shared_engine import remote_code_model

ROOT = Path(__file__).resolve().parent.parent
CONFIG = dict(use=True, model="el-2l-128", k=4, selection="first", seed=0, order="as_chosen",
              perturb="gold", flip=0.5, calibrate=False, per_query=False, variant="")
ATTN = ("w1 w2 w3 w1 w2 w3", "", 0, 256)  # text, second segment, window start and size


def hub_cache_model(cache: Path, repo: str, marker: Path) -> None:
    """``repo`` in a Hugging Face cache folder (as a download leaves it), its config pointing at its own code."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    remote_code_model(folder / "snapshots" / ("0" * 40), marker)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    """The app exactly as a teacher starts it for a class, bound to every interface."""
    from core.models.loading import load_model
    from core.models.types import ModelSpec
    tmp = tmp_path_factory.mktemp("class-server")
    markers = {"folder": tmp / "ran-folder", "hub": tmp / "ran-hub"}
    remote_code_model(tmp / "models" / "evil", markers["folder"])
    hub_cache_model(tmp / "hub", "evil-org/evil-model", markers["hub"])
    llama = load_model(ModelSpec(str(tiny_models["llama"])))
    stub, silent = Stub(llama.model, llama.tokenizer), Silent()
    port = _free_port()
    env = dict(os.environ, HF_HUB_CACHE=str(tmp / "hub"), EL_OPERATOR_KEY="the-operators-key",
               EL_SECRET="a-secret-of-the-server", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(port), "--offline", "--runs-dir",
         str(tmp / "runs"), "--model-dir", str(tmp / "models"), "--endpoint-timeout", "3",
         "--endpoint", f"{stub.url};key=EL_OPERATOR_KEY", "--endpoint", silent.url, "--max-runs-per-session", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def answers():
        import httpx
        if proc.poll() is not None:
            pytest.fail(f"the app exited: {(tmp / 'server.log').read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(answers, "the app to answer", 240)
    yield dict(url=url, tmp=tmp, markers=markers, stub=stub, silent=silent, models=tmp / "models")
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    stub.close()
    silent.close()


def client(server) -> Client:
    return Client(server["url"], verbose=False)


def test_a_script_names_the_default_model_right_after_start(server):
    """The page answers before the default model is in; a call naming it waits for it, none is refused."""
    c = client(server)
    out = c.predict("el-2l-128", 0, 1, *ATTN, api_name="/attention")
    assert "tokens" in out[0] and out[-1]["value"] == "el-2l-128"


def test_no_client_runs_a_models_own_code(server):
    c = client(server)
    for name in (str(server["models"] / "evil"), "evil-org/evil-model"):
        for trust in (True, False):
            with pytest.raises(AppError, match="operator"):
                c.predict(name, "", "auto", "auto", "auto", trust, api_name="/load_model")
    assert not server["markers"]["folder"].exists() and not server["markers"]["hub"].exists()


def test_dataset_names_are_refused_alike_whether_a_path_exists_or_not(server):
    c = client(server)
    msgs = set()
    for name in ("/etc", "/no/such/place", "../..", "../../no-such", str(server["tmp"]), "~/.ssh"):
        task = ["hub dataset", "recall", None, None, "label", "", "", "{text}", " ", " ; ", name]
        with pytest.raises(AppError) as err:
            c.predict(*task, *configs(CONFIG, {}), "", 0, False, api_name="/fewshot_preview")
        msgs.add(str(err.value))
    assert len(msgs) == 1 and "Hub dataset ids only" in msgs.pop()


def test_no_client_names_an_environment_variable(server):
    c = client(server)
    stub = server["stub"]
    for env in ("EL_SECRET", "HOME", "NO_SUCH_VARIABLE"):
        name = c.predict(stub.url, "stub-model", env, api_name="/served_model_name")
        with pytest.raises(AppError, match="keys come only from the operator"):
            c.predict(name, "", "auto", "auto", "auto", False, api_name="/load_model")
    name = c.predict(stub.url, "stub-model", "", api_name="/served_model_name")
    c.predict(name, "", "auto", "auto", "auto", False, api_name="/load_model")
    assert stub.auth and set(stub.auth) == {"Bearer the-operators-key"}


def test_each_session_starts_on_the_servers_default_model(server):
    a, b = client(server), client(server)
    a.predict("el-1l-64", "", "auto", "auto", "auto", False, api_name="/load_model")
    assert a.predict("", 0, 0, *ATTN, api_name="/attention")[-1]["value"] == "el-1l-64"  # A's own active model
    assert b.predict("", 0, 0, *ATTN, api_name="/attention")[-1]["value"] == "el-2l-128"  # not the last loaded
    card, info, *_ = b.predict(None, api_name="/model_status")
    assert info["key"] == "el-2l-128"


def test_each_session_has_its_own_history_and_sees_shared_runs_read_only(server):
    a, b = client(server), client(server)
    a.predict("el-2l-128", 0, 1, "w7 w8 w9 w7 w8 w9", "", 0, 256, api_name="/attention")
    table_a, _ = a.predict("", "", "", api_name="/history_list")
    table_b, _ = b.predict("", "", "", api_name="/history_list")
    ids_a = [r[0] for r in table_a["data"]]
    assert ids_a and not set(ids_a) & {r[0] for r in table_b["data"]}
    rid = ids_a[0]
    with pytest.raises(AppError, match="No run"):
        b.predict(rid, api_name="/history_reopen")
    a.predict(rid, True, "", "", "", api_name="/history_share")
    table_b, _ = b.predict("", "", "", api_name="/history_list")
    row = next(r for r in table_b["data"] if r[0] == rid)
    assert row[-1] == "shared (read-only)"
    b.predict(rid, api_name="/history_reopen")  # opens, read-only
    with pytest.raises(AppError, match="someone else's"):
        b.predict(rid, "renamed", "", "", "", "", "", api_name="/history_save")
    with pytest.raises(AppError, match="someone else's"):
        b.predict(rid, True, "", "", "", api_name="/history_delete")


def test_a_cancel_from_the_api_stops_a_job_still_waiting_in_the_queue(server):
    a, b = client(server), client(server)
    long = a.submit(*TASK, *configs(dict(CONFIG, selection="nearest", per_query=True), {}), "", 0, "k",
                    ",".join(map(str, range(13))), ",".join(map(str, range(8))), ["accuracy"],
                    api_name="/fewshot_sweep")
    wait_until(lambda: long.status().code.name in ("PROCESSING", "ITERATING"), "A's sweep to start")
    queued = b.submit(*TASK, *configs(CONFIG, {}), "", 4, False, api_name="/fewshot_run")
    wait_until(lambda: queued.status().code.name == "IN_QUEUE", "B's run to wait in the queue")
    b.predict(api_name="/cancel_fewshot")       # B's Cancel while its run still waits
    a.predict(api_name="/cancel_fewshot")       # then A's long sweep ends
    with pytest.raises(AppError, match="cancelled"):
        queued.result(timeout=300)
    with pytest.raises(AppError, match="cancelled"):
        long.result(timeout=300)
    table_b, _ = b.predict("fewshot", "", "", api_name="/history_list")
    assert table_b["data"] == []                # B's run never ran


def test_a_hanging_endpoint_delays_nobody_and_its_load_can_be_cancelled(server):
    a, b = client(server), client(server)
    silent = server["silent"]
    seen = len(silent.conns)
    load = a.submit(f"openai+{silent.url}#m", "", "auto", "auto", "auto", False, api_name="/load_model")
    wait_until(lambda: len(silent.conns) > seen, "A's load to reach the hung endpoint")
    out = b.predict("el-2l-128", 0, 1, *ATTN, api_name="/attention")  # B is served meanwhile
    assert "tokens" in out[0] and not load.done()
    a.predict(api_name="/cancel_load")
    with pytest.raises(AppError, match="cancelled|did not answer"):
        load.result(timeout=120)


def test_every_exported_csv_is_escaped(server, tmp_path):
    rows = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in [
        ("=HYPERLINK(\"http://evil\")", "=1+1"), ("+SUM(A1)", "@cmd"), ("plain", "-x")] * 4)
    (tmp_path / "train.csv").write_text(rows)
    task = ["upload", "recall", handle_file(str(tmp_path / "train.csv")), None, "label", "", "", "{text}", " ",
            "\\n", ""]
    c = client(server)
    out = c.predict(*task, *configs(dict(CONFIG, k=1), {}), "", 0, False, api_name="/fewshot_run")
    csv_path, json_path = out[-2], out[-1]
    cells = [cell for row in csv.reader(open(csv_path, newline="")) for cell in row]
    assert not [x for x in cells if x[:1] in ("=", "+", "@") or (x[:1] == "-" and not x[1:2].isdigit())]
    assert any(x.startswith("'=HYPERLINK") for x in cells)
    raw = json.dumps(json.load(open(json_path)))  # the JSON export stays exact
    assert "=HYPERLINK" in raw and "'=HYPERLINK" not in raw


@pytest.mark.browser
def test_two_browsers_see_their_own_defaults_and_history(server, tmp_path):
    """Two people in two browsers: each starts on the server's default, keeps its own History across a reload, and
    sees the other's run only once it is shared — read-only."""
    import re
    import shutil
    from test_browser import ARGS, CHROMIUM
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright
    shots = Path(os.environ.get("EL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pages = []
        for _ in range(2):  # two browsers: separate storage, separate sessions
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = ctx.new_page()
            pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                ("http://127.0.0.1", "data:", "blob:")) else route.abort())
            pg.goto(server["url"], wait_until="domcontentloaded")
            pages.append(pg)
        a, b = pages

        def history(pg) -> str:
            pg.get_by_role("tab", name="History").click()
            pg.locator("#hist-refresh").click()
            pg.wait_for_timeout(300)  # the listing replaces the table
            pg.locator("#hist-table").wait_for(timeout=60_000)
            return pg.locator("#hist-table").inner_text()

        def own_runs(listing: str) -> str:
            """The rows of the History table this browser owns ('yours' in the whose column)."""
            rows = re.split(r"(?=\d{8}-\d{6}-[0-9a-f]{6})", listing)[1:]
            return "".join(r for r in rows if "shared (read-only)" not in r)

        def show_attention(pg, text: str) -> None:
            pg.get_by_role("tab", name="Attention").click()
            pg.locator("#attn-text textarea").fill(text)
            pg.locator("#attn-show").click()
            pg.locator("#attn-head-plot").get_by_text(text.split()[0]).first.wait_for(state="attached",
                                                                                    timeout=300_000)

        # A makes another model its own; B still starts on the server's default
        a.get_by_role("tab", name="Model").click()
        a.get_by_text("Advanced").first.click()
        assert a.locator("#model-trust input").is_disabled()  # remote code: the operator's decision here
        field = a.locator("#model-select input")
        field.fill("el-1l-64")
        field.press("Enter")
        a.locator("#load-model").click()
        a.locator("#model-info-card .el-card h3").get_by_text("el-1l-64").wait_for(timeout=300_000)
        a.get_by_role("tab", name="Attention").click()
        b.get_by_role("tab", name="Attention").click()
        a.wait_for_function("() => document.querySelector('#attn-model input').value === 'el-1l-64'",
                            timeout=60_000)
        b.wait_for_function("() => document.querySelector('#attn-model input').value === 'el-2l-128'",
                            timeout=60_000)

        show_attention(a, "w31 w32 w33 w31 w32 w33")
        show_attention(b, "w41 w42 w43 w41 w42 w43")
        mine_a, mine_b = own_runs(history(a)), own_runs(history(b))  # (runs shared by earlier tests aside)
        assert "el-1l-64" in mine_a and "el-2l-128" not in mine_a  # A's run only
        assert "el-2l-128" in mine_b and "el-1l-64" not in mine_b  # B's run only

        # A shares its run: B sees it, read-only
        ids = a.locator("#hist-table").get_by_text(re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$"))
        next(ids.nth(i) for i in range(ids.count()) if ids.nth(i).is_visible()).click()
        a.wait_for_function("() => document.querySelector('#hist-run textarea, #hist-run input').value.length > 0",
                            timeout=60_000)
        a.locator("#hist-share-box input").check()
        a.locator("#hist-share").click()
        a.locator("#hist-status").get_by_text("Shared").wait_for(timeout=60_000)
        shared = history(b)
        assert "el-1l-64" in shared and "shared (read-only)" in shared
        b.screenshot(path=str(shots / "class-history-b.png"), full_page=True)

        # A's History is A's across a reload (its id is kept in the browser)
        a.reload(wait_until="domcontentloaded")
        a.get_by_role("tab", name="History").click()
        a.wait_for_function("() => document.querySelector('#hist-table').innerText.includes('el-1l-64')",
                            timeout=60_000)
        kept = own_runs(a.locator("#hist-table").inner_text())
        assert "el-1l-64" in kept and "el-2l-128" not in kept
        a.screenshot(path=str(shots / "class-history-a.png"), full_page=True)
        browser.close()
