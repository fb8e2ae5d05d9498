"""Time to the phase change in the app's live training run (``train-tiny --preset live``), against other presets
in the same run.

    python bench/live_phase_change.py [--presets live[,OTHER...]] [--device cpu|cuda] [--threads N]

Runs each preset as the Emergence tab runs the live one (a subprocess writing one JSON line per evaluation), one
after the other, and reports the first evaluation at which key -> value recall accuracy passes 0.5 and the top
induction score passes 0.5, with the wall-clock time since the process started. The first preset is the
reference: every other one is reported as a ratio of its wall time to the reference's. The issue's aim is under
two minutes on a 2-core CPU (``/ 120 s``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIM_S = 120.0


def run_preset(preset: str, device: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress.jsonl"
        cmd = [sys.executable, "-m", "core", "train-tiny", "--preset", preset, "--out", tmp,
               "--progress", str(progress), "--threads", str(threads)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="" if device == "cpu" else os.environ.get(
            "CUDA_VISIBLE_DEVICES", "0"))
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        seen: dict[str, dict] = {}
        while proc.poll() is None:
            time.sleep(0.5)
            if not progress.exists():
                continue
            for line in progress.read_text().splitlines():
                ev = json.loads(line)
                wall = round(time.time() - t0, 1)
                for key, name in (("recall_accuracy", "recall"), ("top_induction", "induction")):
                    if name not in seen and ev[key] >= 0.5:
                        seen[name] = {"step": ev["step"], "train_elapsed_s": ev["elapsed_s"], "wall_s": wall}
            if len(seen) == 2:  # both seen: the rest of the run is not what is measured
                proc.terminate()
                proc.wait()
                break
        total = round(time.time() - t0, 1)
        if proc.returncode not in (0, -15) and len(seen) < 2:
            raise SystemExit(proc.stderr.read().decode()[-2000:])
    return {"preset": preset, "total_wall_s": total, "phase_change": seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="live", help="comma-separated train-tiny presets; the first is the reference")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    results = [run_preset(p, args.device, args.threads) for p in args.presets.split(",") if p]
    ref = results[0]["phase_change"].get("induction")
    for r in results:
        for name in ("recall", "induction"):
            hit = r["phase_change"].get(name)
            if not hit:
                print(f"{r['preset']:10s} {name:9s} never reached 0.5")
                continue
            vs_ref = (f" | / reference = {hit['wall_s'] / ref['wall_s']:.2f}" if ref and name == "induction"
                      and r is not results[0] else "")
            print(f"{r['preset']:10s} {name:9s} >= 0.5 at step {hit['step']:5d}: {hit['train_elapsed_s']:6.1f} s of "
                  f"training, {hit['wall_s']:6.1f} s wall (process start included) | / {AIM_S:.0f} s aim = "
                  f"{hit['wall_s'] / AIM_S:.2f}{vs_ref}")
    print(json.dumps({"device": args.device, "load_average": os.getloadavg()[0], "runs": results}))


if __name__ == "__main__":
    main()
