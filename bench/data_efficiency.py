"""How many examples is a prompt worth? (Le Scao & Rush 2021), measured on the embedded model and on SmolLM2.

    python bench/data_efficiency.py --preset embedded     # wordgroups: prompting never works
    python bench/data_efficiency.py --preset smollm2      # sentiment: prompting works from k = 0

Runs the study of the Tuning studies tab (every size x seed a queued run, prompting at every k x seed on the
same held-out rows) and prints both curves (mean ± std over seeds), the crossing point, and the time taken,
with the machine's load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine import Engine  # noqa: E402
from core.finetune.requests import DataEfficiencyRequest  # noqa: E402
from core.models.types import AppConfig  # noqa: E402

PRESETS = {
    "embedded": dict(model="el-2l-128", task="wordgroups", method="lora", lr="3e-3", lora_r=32, lora_alpha=64,
                     batch_size=32, max_steps=150, sizes="8,16,32,64,128,256", ks="0,1,2,4", seeds=3),
    "smollm2": dict(model="smollm2-135m", task="sentiment", method="lora", lr="1e-3", lora_r=8, lora_alpha=16,
                    batch_size=8, max_steps=30, sizes="4,8,16,40", ks="0,1,2,4", seeds=2, max_length=64),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="embedded")
    ap.add_argument("--runs-dir", default=None)
    a = ap.parse_args()
    runs = Path(a.runs_dir or tempfile.mkdtemp(prefix="data-bench-"))
    engine = Engine(AppConfig(model=None, runs_dir=runs, offline=True))
    req = DataEfficiencyRequest.from_mapping(PRESETS[a.preset])
    load, t0 = os.getloadavg()[0], time.time()
    st = engine.studies.wait(engine.studies.data_efficiency_start(req), poll=2.0)
    print(f"{req.model} on {st.task}: {req.method} {req.objective}, {req.max_steps} steps per run, "
          f"{req.seeds} seeds; {time.time() - t0:.0f} s; load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    failed = [r for r in st.runs if r.state != "finished"]
    for r in failed:
        print(f"  {r.name}: {r.state} {r.message[:200]}")
    print("fine-tuning on N: " + ", ".join(f"{n}: {m:.3f}±{s:.3f}" for n, m, s, _ in st.finetune_curve()))
    print("prompting with k: " + ", ".join(f"{k}: {m:.3f}±{s:.3f}" for k, m, s, _ in st.fewshot_curve()))
    print("crossing: " + st.crossing()["note"])


if __name__ == "__main__":
    main()
