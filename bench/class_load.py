"""A class on one server: thirty ``gradio_client`` sessions at once against the app started as a teacher starts it
(``python app.py --host 0.0.0.0``, probed on 127.0.0.1 only), beside one session watching a fine-tuning run and one
whose served endpoint hangs.

    python bench/class_load.py [--sessions 30] [--attention 3] [--json out.json]

Each session connects, makes 3 attention calls and 1 few-shot run with inputs of its own (its own words, its own
number of test examples), and checks that every answer is its own. Prints connection failures, errors, mixed-up
answers, p50/p95 latency of connecting and of each call (and, as the reference measured in the same run, the same
calls made by one session alone), the calls served while the hung endpoint's load was pending, and the server's
peak memory (its process and its children). Bounded: every loop has a ceiling; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from served_stub import Silent  # noqa: E402

CONFIG = dict(use=True, model="el-2l-128", k=4, selection="nearest", seed=0, order="as_chosen", perturb="gold",
              flip=0.5, calibrate=False, per_query=True, variant="")
TASK = ["built-in", "recall", None, None, "", "", "", "{key} =", " ", " ; ", ""]
OFF = dict(CONFIG, use=False)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configs(limit_cfg: dict) -> list:
    return [*limit_cfg.values(), *[v for _ in range(3) for v in OFF.values()]]


def memory_of(pid: int) -> int:
    """Resident bytes of a process and its children (from /proc)."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Session:
    """One visitor: connect, 3 attention calls, 1 few-shot run; every answer checked against what it asked."""

    def __init__(self, url: str, n: int, n_attention: int):
        self.url, self.n, self.n_attention = url, n, n_attention
        self.times: dict[str, list[float]] = {"connect": [], "attention": [], "fewshot": []}
        self.errors: list[str] = []
        self.mixed: list[str] = []
        self.finished: list[float] = []  # when each call came back (perf_counter)
        self.connect_failed = False

    def words(self, call: int) -> list[str]:  # its own words: w<a> w<b> w<c>, repeated (distinct per call)
        base = (self.n * 7 + call * 3) % 90
        return [f"w{base + j}" for j in range(3)] * 2

    def run(self, start: threading.Barrier) -> None:
        from gradio_client import Client
        start.wait()
        t0 = time.perf_counter()
        try:
            client = Client(self.url, verbose=False, httpx_kwargs={"timeout": 600})
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            self.connect_failed, _ = True, self.errors.append(f"connect: {type(exc).__name__}: {exc}")
            return
        self.times["connect"].append(time.perf_counter() - t0)
        for call in range(self.n_attention):
            words = self.words(call)
            t0 = time.perf_counter()
            try:
                out = client.predict("el-2l-128", 1, call % 4, " ".join(words), "", 0, 256, api_name="/attention")
                self.times["attention"].append(time.perf_counter() - t0)
                self.finished.append(time.perf_counter())
                rows = list(csv.DictReader(open(out[4], newline="")))
                seen = [r["query_token"].strip() for r in rows if r["key_pos"] == r["query_pos"]]
                if [t for t in seen if t.startswith("w")] != words:  # its own words, in its order, and no other
                    self.mixed.append(f"attention {call}: asked {words}, got {seen}")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"attention: {type(exc).__name__}: {exc}")
        limit = 4 + self.n % 20  # its own number of test examples
        t0 = time.perf_counter()
        try:
            out = client.predict(*TASK, *configs(CONFIG), "", limit, False, api_name="/fewshot_run")
            self.times["fewshot"].append(time.perf_counter() - t0)
            self.finished.append(time.perf_counter())
            if f"on {limit} examples" not in out[0]:
                self.mixed.append(f"fewshot: asked {limit}, got {out[0]!r}")
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"fewshot: {type(exc).__name__}: {exc}")


def reference(url: str, n_attention: int) -> dict:
    """The same calls made by one session alone (the machine otherwise quiet)."""
    s = Session(url, 999, n_attention)
    s.run(threading.Barrier(1))
    if s.errors:
        raise SystemExit(f"the reference session failed: {s.errors}")
    return {k: statistics.median(v) for k, v in s.times.items()}


def watcher(url: str, out: dict, stop: threading.Event) -> None:
    """A session that starts a small fine-tuning run and watches it stream."""
    from gradio_client import Client
    sys.path.insert(0, str(ROOT / "tests"))
    from test_app_finetune import widgets
    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    job = client.submit(*widgets(epochs=3), api_name="/finetune_start")
    end = time.monotonic() + 900
    while not job.done() and not stop.is_set() and time.monotonic() < end:
        time.sleep(0.5)
    out["updates"] = len(job.outputs())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    try:
        job.result(timeout=5)
        out["error"] = None
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--attention", type=int, default=3, help="attention calls per session")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="el-class-"))
    silent = Silent()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(port), "--offline",
                               "--runs-dir", str(tmp / "runs"), "--endpoint", silent.url, "--endpoint-timeout", "30"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    peak = {"bytes": 0}
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak["bytes"] = max(peak["bytes"], memory_of(server.pid))
            time.sleep(0.2)
    threading.Thread(target=sample, daemon=True).start()
    try:
        import httpx
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        from gradio_client import Client
        warm = Client(url, verbose=False)
        warm.predict("el-2l-128", 0, 0, "w1 w2 w1 w2", "", 0, 256, api_name="/attention")  # the default is in
        ref = reference(url, a.attention)

        # one session's endpoint hangs: its load waits on it while the class works
        hung: dict = {}

        def hang():
            c = Client(url, verbose=False)
            t0 = time.perf_counter()
            try:
                c.predict(f"openai+{silent.url}#m", "", "auto", "auto", "auto", False, api_name="/load_model")
            except Exception as exc:  # noqa: BLE001 - it is meant to fail
                hung["error"] = str(exc)[:120]
            hung["seconds"] = time.perf_counter() - t0
            hung["ended"] = time.perf_counter()
        hang_thread = threading.Thread(target=hang)
        hang_thread.start()
        watch: dict = {}
        stop = threading.Event()
        watch_thread = threading.Thread(target=watcher, args=(url, watch, stop))
        watch_thread.start()

        sessions = [Session(url, n, a.attention) for n in range(a.sessions)]
        barrier = threading.Barrier(a.sessions)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=s.run, args=(barrier,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.perf_counter() - t0
        hang_thread.join(300)
        stop.set()
        watch_thread.join(300)
    finally:
        sampling.set()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        silent.close()

    times = {k: [x for s in sessions for x in s.times[k]] for k in ("connect", "attention", "fewshot")}
    report = {
        "sessions": a.sessions, "load_average": os.getloadavg()[0],
        "connection_failures": sum(s.connect_failed for s in sessions),
        "errors": sum(len(s.errors) for s in sessions), "mixed_up": sum(len(s.mixed) for s in sessions),
        "wall_s": round(wall, 1), "peak_memory_mib": round(peak["bytes"] / 2**20),
        "reference_alone_s": {k: round(v, 3) for k, v in ref.items()},
        **{f"{k}_p50_s": round(pct(v, 0.5) or 0, 3) for k, v in times.items()},
        **{f"{k}_p95_s": round(pct(v, 0.95) or 0, 3) for k, v in times.items()},
        "hung_load": {"seconds": round(hung.get("seconds", 0), 1), "error": hung.get("error")},
        "calls_served_while_the_hung_load_waited": sum(
            1 for s in sessions for t in s.finished if t < hung.get("ended", 0)),
        "watcher": watch,
        "first_errors": [e for s in sessions for e in s.errors][:5],
        "first_mixed": [m for s in sessions for m in s.mixed][:5],
    }
    print(json.dumps(report, indent=2))
    for k in ("connect", "attention", "fewshot"):
        alone = ref.get(k)
        p95 = report[f"{k}_p95_s"]
        print(f"{k:9s}: p50 {report[f'{k}_p50_s']:.2f} s, p95 {p95:.2f} s"
              + (f"; one session alone {alone:.2f} s (p95 / alone = {p95 / alone:.1f}x)" if alone else ""))
    print(f"{a.sessions} sessions: {report['connection_failures']} connection failures, {report['errors']} errors, "
          f"{report['mixed_up']} mixed-up answers; peak memory {report['peak_memory_mib']} MiB; "
          f"load average {report['load_average']:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
