"""An interrupted search (killed driver, or Ctrl-C) continues with --resume: no finished trial re-runs,
the interrupted trial continues from its checkpoint, and the searcher keeps its state."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES, MAX_EPOCHS = 5, 3
SPACE = f'''
SETTINGS = {{"num_samples": {NUM_SAMPLES}, "max_epochs": {MAX_EPOCHS}, "grace_period": {MAX_EPOCHS},
            "cpus_per_trial": 1, "max_concurrent": 1, "train_size": 32, "eval_size": 32,
            "trial": {{"num_workers": 0, "backbone": "resnet10t", "batch_size": 8}}}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 5e-2, log=True)
'''


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if (p / "params.json").exists()) if experiment.exists() else []


def study_params(experiment: Path) -> list[dict]:
    state = max(experiment.glob("searcher-state-*.pkl"))  # one per session; Ray restores the newest name
    study = pickle.loads(state.read_bytes())["_ot_study"]
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


def iterations(trial_dir: Path, key: str = "training_iteration") -> list[int]:
    path = trial_dir / "result.json"
    return [json.loads(line)[key] for line in path.read_text().splitlines()] if path.exists() else []


def epochs(trial_dir: Path) -> list[int]:
    """The trial's own epoch counter (restored from its checkpoint; Tune's training_iteration is Tune's)."""
    return iterations(trial_dir, "epoch")


@pytest.mark.parametrize("interrupt", [signal.SIGKILL, signal.SIGINT], ids=["killed-driver", "ctrl-c"])
def test_interrupted_search_resumes(tmp_path, interrupt):
    data = make_image_folder(tmp_path / "data")
    space = tmp_path / "space.py"
    space.write_text(SPACE)
    storage = tmp_path / "results"
    experiment = storage / "resumable"
    cmd = [sys.executable, "search/run.py", "--storage", str(storage), "--name", "resumable"]
    log = open(tmp_path / "first.log", "w")
    started = time.time()
    driver = subprocess.Popen(cmd + ["--space", str(space), "--data", str(data)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    # Interrupt once two trials have finished and the third has written its first checkpoint.
    deadline = time.time() + 240
    while not (len(trial_dirs(experiment)) >= 3 and list(trial_dirs(experiment)[-1].glob("checkpoint_*"))):
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "the search made no progress"
        time.sleep(0.5)
    time.sleep(1)  # let Tune save its experiment state
    at_kill = {d.name: iterations(d) for d in trial_dirs(experiment)}
    killed_at = time.time() - started
    if interrupt == signal.SIGKILL:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and every Ray process it started: nothing shuts down
    else:
        driver.send_signal(signal.SIGINT)
    driver.wait(120)
    log.close()
    at_stop = {d.name: epochs(d) for d in trial_dirs(experiment)}  # what --resume starts from
    interrupted = [name for name, its in at_stop.items() if len(its) < MAX_EPOCHS]
    report = [f"[resume] killed: the driver (pid {driver.pid}) with {signal.Signals(interrupt).name}"
              f"{' to its process group' if interrupt == signal.SIGKILL else ''}, {killed_at:.1f} s into the search; "
              f"epochs reported per trial then: {at_kill}; when it had stopped: {at_stop}"]
    first_log = (tmp_path / "first.log").read_text()
    if interrupt == signal.SIGINT:
        assert "To continue" in first_log and "--name resumable --resume" in first_log

    finished = {d.name: iterations(d) for d in trial_dirs(experiment) if len(iterations(d)) == MAX_EPOCHS}
    assert len(finished) >= 2
    params_before = study_params(experiment)

    resumed_at = time.time()
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    table = pd.read_csv(experiment / "leaderboard.csv") if (experiment / "leaderboard.csv").exists() else None
    report.append(f"[resume] --resume exited {resumed.returncode} after {time.time() - resumed_at:.1f} s: "
                  + (", ".join(f"{r.trial_id} {r.ended} ({r.epochs} epochs)" for r in table.itertuples())
                     if table is not None else "no leaderboard"))
    report.append("[resume] recovered: " + ("; ".join(
        f"{name} (epochs {at_stop[name]} before) continued with epochs "
        f"{epochs(experiment / name)[len(at_stop[name]):]}" for name in interrupted) or "no trial was left mid-way")
        + f"; {len(finished)} finished trial(s) kept as they were")
    report = "\n".join(report)
    print("\n" + report)
    assert resumed.returncode == 0, report + "\n" + resumed.stdout[-3000:] + resumed.stderr[-3000:]

    table = pd.read_csv(experiment / "leaderboard.csv")
    assert len(table) == NUM_SAMPLES and (table["ended"] == "completed").all(), report
    for name, its in finished.items():  # no finished trial ran again
        assert iterations(experiment / name) == its, report
    for d in trial_dirs(experiment):  # every trial's epochs run once each: resumed, not restarted
        assert iterations(d) == list(range(1, MAX_EPOCHS + 1)), f"{d.name}\n{report}"
        assert epochs(d) == list(range(1, MAX_EPOCHS + 1)), f"{d.name} restarted from epoch 1?\n{report}"
    # The resumed searcher started from the interrupted one's study (its periodic state file can lag
    # the last trials by a few seconds, so compare the prefix; the leaderboard above has all trials).
    params_after = study_params(experiment)
    assert len(params_after) >= len(params_before) >= 3
    assert params_after[: len(params_before)] == params_before
