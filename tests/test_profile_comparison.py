"""The two-profile comparison (benchmarks/tools/profile_comparison.py): one command runs each profile's simulation
with that profile's settings and costs, and writes one table with its record beside it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.tools import profile_comparison as comparison
from search.space_file import LARGE_SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def phases(start, end, result, checkpoint, dispatch):
    return {"per_trial_start": {"wall_ms": start}, "per_trial_end": {"wall_ms": end}, "per_result": {"wall_ms": result},
            "per_checkpoint": {"wall_ms": checkpoint}, "dispatch_per_event": {"wall_ms": dispatch},
            "calls": {"_on_saving_result": 7}}


def test_measured_costs_charge_a_dispatched_event_to_the_start_and_the_result():
    row = {"driver_phases": phases(11.0, 2.5, 4.0, 0.9, 1.5)}
    assert comparison.measured_costs(row) == {"start": 12.5, "end": 2.5, "result": 5.5, "checkpoint": 0.9}


def test_a_failed_run_is_a_row_of_the_table_and_the_others_stay():
    real = {"fake_gpu_util_held_until_last_start": 0.25, "report_gap_minus_sleep_ms_median": 9.0,
            "report_gap_minus_sleep_ms_p90": 30.0, "driver_main_thread_cpu_s": 5.0, "wall_s": 100.0, "epochs": 120,
            "trials_reported": 64, "driver_phases": phases(20.0, 3.0, 5.0, 1.0, 1.0)}
    runs = [{"kind": "real", "profile": "standard", "gpus": 32, "command": "python -m x", "seconds": 100, "result": real},
            {"kind": "real", "profile": "large", "gpus": 32, "command": "python -m y", "seconds": 90,
             "result": {**real, "fake_gpu_util_held_until_last_start": 0.3}},
            {"kind": "sim", "profile": "standard", "gpus": 1024, "command": "python -m z", "seconds": 5,
             "error": "ran past 60 s; log"}]
    info = {"date": "2026-12-03", "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 8, "python": "3.11",
                                              "packages": {"ray": "2.60.0", "optuna": "5.0.0"}},
            "load_before": (1.0, 1.0, 1.0), "load_after": (2.0, 2.0, 2.0), "seconds": 600, "command": "python -m c",
            "commit": "abcdef1234567", "tree_dirty": False, "sim_costs": comparison.DOCUMENTED_COSTS,
            "sim_costs_source": "documented"}
    table = comparison.markdown(runs, info)
    rows = [line for line in table.splitlines() if line.startswith("| real Ray") or line.startswith("| simulation")]
    assert len(rows) == 3
    assert "| **0.300** | +0.050 |" in rows[1]                   # large against the standard row of its layer
    assert "error: ran past 60 s" in rows[2]
    assert "| standard | real Ray, 32 fake GPUs (dispatch included) | 21.0 | 3.0 | 6.0 | 1.0 |" in table
    assert "`python -m z`" in table and "`python -m c`" in table


@pytest.mark.slow  # two simulations in processes of their own, one with the suggestion pool's helper processes
def test_one_command_runs_both_profiles_with_their_settings_and_writes_the_table_and_record(tmp_path):
    out = tmp_path / "profiles"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "benchmarks.tools.profile_comparison", "--gpus", "4",
                           "--trials-per-gpu", "1", "--real-ray-gpus", "0", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record_file,) = out.glob("profile_comparison-*.json")
    record = json.loads(record_file.read_text())
    assert record["command"].startswith("python -m benchmarks.tools.profile_comparison --gpus 4")
    runs = {r["profile"]: r for r in record["figures"]["runs"]}
    assert set(runs) == {"standard", "large"} and all(r["kind"] == "sim" and r["gpus"] == 4 for r in runs.values())
    standard, large = runs["standard"]["result"], runs["large"]["result"]
    assert (standard["report_epochs"], standard["suggestion_pool"], standard["tpe_history_window"]) == ("every", 0, 0)
    assert not standard["report_in_background"] and not standard["checkpoint_after_decision"]
    assert (large["report_epochs"], large["suggestion_pool"], large["tpe_history_window"]) == (
        LARGE_SETTINGS["report_epochs"], LARGE_SETTINGS["suggestion_pool"], LARGE_SETTINGS["tpe_history_window"])
    assert large["report_in_background"] and large["checkpoint_after_decision"] and large["paced"]
    for profile, result in (("standard", standard), ("large", large)):
        costs = comparison.DOCUMENTED_COSTS[profile]
        assert (result["start_cost_ms"], result["end_cost_ms"], result["result_cost_ms"],
                result["checkpoint_cost_ms"]) == (costs["start"], costs["end"], costs["result"], costs["checkpoint"])
        assert result["checkpoint_every"] == 3 and result["checkpoint_s"] == 1.0 and result["snapshot_ms_per_changed"] > 0
        assert result["started"] == result["finished"] == 4
    assert large["results_reported"] < standard["results_reported"]  # decisions-only reports
    table = (out / "profile_comparison.md").read_text()
    assert table.count("| simulation | 4 |") == 2 and runs["large"]["command"] in table
    assert len(list((out / "runs").glob("scale_simulation-*.json"))) == 2  # each run's own record
