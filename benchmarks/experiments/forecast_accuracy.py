"""The plan's forecast against what the search then spent, on small CPU searches of this machine (issue 27).

For each space: the plan's forecast (calibrated on this machine, as a plan does), then the search itself
(`search/run.py`, no ensemble, every checkpoint kept), then its leaderboard: CPU-hours, trial-epochs and wall
time, forecast against actual; then search/cleanup.py on the finished run: checkpoint bytes before and after.

    python -m benchmarks.experiments.forecast_accuracy                   # the three spaces below
    python -m benchmarks.experiments.forecast_accuracy --only digits-r10t

The machine's load average is recorded before and after each run: calibration and search share it.
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

import pandas as pd

from benchmarks.record import ROOT, write_record

SPACES = {
    # spaces/quick.py as shipped, fewer trials: three backbones, 6 epochs, 2 at once.
    "quick-8": ("spaces/quick.py", ["--num-samples", "8"]),
    # One backbone at 48 px, halving rungs.
    "digits-r10t": ("""
SETTINGS = {"num_samples": 6, "max_epochs": 4, "grace_period": 1, "reduction_factor": 2, "cpus_per_trial": 1,
            "max_concurrent": 2, "train_size": 48, "eval_size": 48, "data": "builtin:digits", "tpe_startup_trials": 3,
            "trial": {"pretrained": False, "batch_size": 64, "num_workers": 0, "backbone": "resnet10t"}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
""", []),
    # A bigger backbone, one trial at a time, two CPUs each.
    "digits-r18-serial": ("""
SETTINGS = {"num_samples": 4, "max_epochs": 3, "grace_period": 1, "reduction_factor": 3, "cpus_per_trial": 2,
            "max_concurrent": 1, "train_size": 32, "eval_size": 32, "data": "builtin:digits", "tpe_startup_trials": 2,
            "trial": {"pretrained": False, "batch_size": 64, "num_workers": 0, "backbone": "resnet18"}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
""", []),
}


def measured_split(out: Path) -> tuple[float, float]:
    """(mean epoch_seconds the trials reported, mean seconds a trial spent before its first epoch): the two
    terms the forecast multiplies, measured, so its error can be put on one or the other."""
    epochs, starts = [], []
    for path in out.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        epochs += [r["epoch_seconds"] for r in rows if "epoch_seconds" in r]
        if rows and "epoch_seconds" in rows[0]:
            starts.append(rows[0]["time_this_iter_s"] - rows[0]["epoch_seconds"])
    mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else None  # noqa: E731
    return mean(epochs), mean(starts)


def run_one(label: str, space: str, extra: list[str], work: Path) -> dict:
    path = ROOT / space if space.endswith(".py") and "\n" not in space else work / f"{label}.py"
    if path.parent == work:
        path.write_text(space)
    storage = work / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "search/run.py", "--space", str(path), "--storage", str(storage), "--name", label,
               "--ensemble-top-k", "0", "--keep-all-checkpoints", *extra]
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label}: the search failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = storage / label
    plan = json.loads((out / "plan.json").read_text())
    cost = plan["forecast"]["cost"]
    table = pd.read_csv(out / "leaderboard.csv")
    from search.cleanup import clean

    epoch_s, start_s = measured_split(out)
    tidy = clean(str(out), table, out)
    actual_h = float(table["cpu_hours"].sum())
    return {
        "space": label, "command": " ".join(command), "load_before": load_before, "load_after": os.getloadavg(),
        "forecast_cpu_hours": cost["accelerator_hours"], "actual_cpu_hours": round(actual_h, 5),
        "ratio": round(cost["accelerator_hours"] / actual_h, 3) if actual_h else None,
        "forecast_epochs": cost["trial_epochs"], "actual_epochs": int(table["epochs"].sum()),
        "forecast_epoch_s": cost["epoch_seconds"], "forecast_start_s": cost["start_seconds"],
        "actual_epoch_s": round(float(table["trial_hours"].sum() * 3600 / max(table["epochs"].sum(), 1)), 2),
        "actual_reported_epoch_s": epoch_s, "actual_start_s": start_s,
        "forecast_wall_min": round(cost["wall_hours"] * 60, 2), "actual_wall_min": round(wall / 60, 2),
        "checkpoint_bytes_before": tidy.before, "checkpoint_bytes_after": tidy.after,
        "checkpoint_folders_removed": tidy.removed, "checkpoint_folders_kept": tidy.kept,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=sorted(SPACES))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.only or list(SPACES):
            space, extra = SPACES[label]
            row = run_one(label, space, extra, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_record("forecast_accuracy", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
