"""An interrupted search (killed driver, or Ctrl-C) continues with --resume: no finished trial re-runs,
the interrupted trial continues from its checkpoint, and the searcher keeps its state."""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_image_folder
from optuna.trial import TrialState
from search.study import load_study

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES, MAX_EPOCHS = 5, 3
# 64 px: epochs of about a second. The killed-driver case needs a moment when a trial is mid-way with its latest
# checkpoint in Tune's saved state (saved every 0.5 s here); at 32 px an idle VM ran an epoch in ~0.3 s and the
# search could end before such a moment came.
SPACE = f'''
SETTINGS = {{"num_samples": {NUM_SAMPLES}, "max_epochs": {MAX_EPOCHS}, "grace_period": {MAX_EPOCHS},
            "cpus_per_trial": 1, "max_concurrent": 1, "train_size": 64, "eval_size": 64,
            "trial": {{"num_workers": 0, "backbone": "resnet10t", "batch_size": 8}}}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 5e-2, log=True)
'''


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if (p / "params.json").exists()) if experiment.exists() else []


def study_params(experiment: Path) -> list[dict]:
    state = max(experiment.glob("searcher-state-*.pkl"))  # one per session; Ray restores the newest name
    study = pickle.loads(state.read_bytes())["_study"]
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


def iterations(trial_dir: Path, key: str = "training_iteration") -> list[int]:
    path = trial_dir / "result.json"
    values = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            values.append(json.loads(line)[key])
        except json.JSONDecodeError:  # the line Tune is writing right now
            break
    return values


def epochs(trial_dir: Path) -> list[int]:
    """The trial's own epoch counter (restored from its checkpoint; Tune's training_iteration is Tune's)."""
    return iterations(trial_dir, "epoch")


def mid_way_trial(experiment: Path, state_saved: bool) -> Path | None:
    """Once two trials have finished: a trial with some but not all epochs done and its last epoch's checkpoint
    written; with state_saved, Tune's experiment state (what --resume restores from) saved since."""
    dirs = trial_dirs(experiment)
    if sum(len(iterations(d)) == MAX_EPOCHS for d in dirs) < 2:
        return None
    saved = max((p.stat().st_mtime for p in experiment.glob("experiment_state-*.json")), default=0.0)
    for d in dirs:
        its = iterations(d)
        checkpoint = d / f"checkpoint_{its[-1] - 1:06d}" if its else None
        if 1 <= len(its) < MAX_EPOCHS and checkpoint.exists() and \
                (not state_saved or saved > checkpoint.stat().st_mtime + 0.2):
            return d
    return None


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
    # Tune saves its experiment state (what --resume restores) at most every 10 s by default, and a trial here
    # runs its 3 epochs in ~3 s; every 0.5 s here, so the driver can be killed while a trial is mid-way.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    driver = subprocess.Popen(cmd + ["--space", str(space), "--data", str(data)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True, env=env)
    # Interrupt once two trials have finished and another one is mid-way, with a checkpoint on record (a
    # killed driver saves nothing more; Ctrl-C makes Tune save its state as it stops).
    deadline = time.time() + 240
    while (victim := mid_way_trial(experiment, state_saved=interrupt == signal.SIGKILL)) is None:
        assert driver.poll() is None, "the search ended before a trial could be interrupted mid-way:\n" + \
            (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "the search made no progress"
        time.sleep(0.1)
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
              f"mid-way trial {victim.name}; epochs reported per trial then: {at_kill}; when it had stopped: "
              f"{at_stop}"]
    first_log = (tmp_path / "first.log").read_text()
    if interrupt == signal.SIGINT:
        assert "To continue" in first_log and "--name resumable --resume" in first_log

    if interrupt == signal.SIGKILL:  # a graceful Ctrl-C may let the trial finish its last epoch first
        assert victim.name in interrupted, report
    finished = {d.name: iterations(d) for d in trial_dirs(experiment) if len(iterations(d)) == MAX_EPOCHS}
    assert len(finished) >= 2
    params_before = study_params(experiment)
    journal_before = [(t.number, t.params) for t in load_study(experiment).trials]  # the study file, as left

    resumed_at = time.time()
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    table = pd.read_csv(experiment / "leaderboard.csv") if (experiment / "leaderboard.csv").exists() else None
    report.append(f"[resume] --resume exited {resumed.returncode} after {time.time() - resumed_at:.1f} s: "
                  + (", ".join(f"{r.trial_id} {r.status} ({r.epochs} epochs)" for r in table.itertuples())
                     if table is not None else "no leaderboard"))
    report.append("[resume] recovered: " + ("; ".join(
        f"{name} (epochs {at_stop[name]} before) continued with epochs "
        f"{epochs(experiment / name)[len(at_stop[name]):]}" for name in interrupted) or "no trial was left mid-way")
        + f"; {len(finished)} finished trial(s) kept as they were")
    report = "\n".join(report)
    print("\n" + report)
    assert resumed.returncode == 0, report + "\n" + resumed.stdout[-3000:] + resumed.stderr[-3000:]

    table = pd.read_csv(experiment / "leaderboard.csv")
    assert len(table) == NUM_SAMPLES and (table["status"] == "completed").all(), report
    for name, its in finished.items():  # no finished trial ran again
        assert iterations(experiment / name) == its, report
    for d in trial_dirs(experiment):  # every trial's epochs run once each: resumed, not restarted
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        first = {}
        for row in rows:
            first.setdefault(row["epoch"], row)
        repeated = [row for row in rows if first[row["epoch"]] is not row]
        assert sorted(first) == list(range(1, MAX_EPOCHS + 1)), f"{d.name}\n{report}"
        assert [row["epoch"] for row in rows] == sorted(row["epoch"] for row in rows), f"{d.name} restarted?\n{report}"
        if interrupt == signal.SIGKILL:
            assert not repeated, f"{d.name}\n{report}"
        else:  # Tune, stopping, may log the epoch in flight but not register its checkpoint: that one epoch
            # runs again after --resume, exactly as it first ran
            assert len(repeated) <= 1 and (not repeated or d.name in interrupted), f"{d.name}\n{report}"
            for row in repeated:
                assert {k: row[k] for k in ("train_loss", "val_loss", "val_acc")} == \
                    {k: first[row["epoch"]][k] for k in ("train_loss", "val_loss", "val_acc")}, f"{d.name}\n{report}"
    # The resumed searcher started from the interrupted one's study (its periodic state file can lag
    # the last trials by a few seconds, so compare the prefix; the leaderboard above has all trials).
    params_after = study_params(experiment)
    assert len(params_after) >= len(params_before) >= 3
    assert params_after[: len(params_before)] == params_before
    # The study file (results/<name>/optuna_study.log) is the same study, continued: what the interrupted
    # search wrote is still there, every leaderboard trial ended COMPLETE in it, and nothing is left RUNNING.
    study = load_study(experiment)
    assert [(t.number, t.params) for t in study.trials][: len(journal_before)] == journal_before
    by_tune_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    assert all(by_tune_id[trial_id].state == TrialState.COMPLETE for trial_id in table["trial_id"]), report
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING], report


OVERRIDE_SPACE = '''
# Defaults the command line overrides: resume must keep the overrides, never fall back to these.
SETTINGS = {"num_samples": 6, "max_epochs": 6, "grace_period": 6, "cpus_per_trial": 64, "max_concurrent": 1,
            "train_size": 32, "eval_size": 32, "data": "/nonexistent/default-data",
            "trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 5e-2, log=True)
'''


def file_states(run: Path) -> dict[str, tuple[bytes, int]]:
    names = ("leaderboard.csv", "leaderboard.md", "best_config.json", "ensemble.json", "prediction.csv",
             "provenance.json", "plan.json")
    return {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in names}


def test_ctrl_c_in_the_last_trial_then_resume_with_the_printed_command(tmp_path):
    """Started with --data and overrides; Ctrl-C while the last trial runs: exit 130, that trial is
    `interrupted`, no ensemble. The printed resume command alone finishes the same search (same data,
    seed, sample count, CPUs), then ensembles; resuming the finished search changes no file."""
    import shlex

    data = make_image_folder(tmp_path / "data")
    space = tmp_path / "space.py"
    space.write_text(OVERRIDE_SPACE)
    storage = tmp_path / "results"
    run = storage / "ovr"
    started = [sys.executable, "search/run.py", "--space", str(space), "--data", str(data), "--storage", str(storage),
               "--name", "ovr", "--num-samples", "2", "--cpus-per-trial", "1", "--seed", "5"]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(started, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while True:  # the first trial has finished and the last one has reported an epoch (of 6)
        dirs = trial_dirs(run)
        if len(dirs) == 2 and sorted(len(iterations(d)) for d in dirs)[0] >= 1:
            break
        assert driver.poll() is None, "the search ended before its last trial could be interrupted:\n" + \
            (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "the search made no progress"
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    code = driver.wait(120)
    log.close()
    first = (tmp_path / "first.log").read_text()
    assert code == 130, first[-3000:]
    # The driver's own output has no traceback. Lines Ray forwards from trial workers are left out: a worker
    # Tune stops after Ctrl-C may print Ray's SIGTERM handler's SystemExit (ray/_private/worker.py), timing-dependent.
    driver_lines = [line for line in first.splitlines() if not re.match(r"^(\x1b\[\d+m)?\(\w+ pid=\d+", line)]
    assert "no ensemble was built" in first and "Traceback" not in "\n".join(driver_lines)
    table = pd.read_csv(run / "leaderboard.csv")
    assert sorted(table["status"]) == ["completed", "interrupted"], table.to_string()
    assert table.loc[table["status"] == "interrupted", "reason"].str.contains("--resume continues it").all()
    assert not (run / "ensemble.json").exists() and not (run / "prediction.csv").exists()
    plan = json.loads((run / "plan.json").read_text())
    assert plan["data"] == str(data) and plan["settings"]["num_samples"] == 2
    assert plan["settings"]["cpus_per_trial"] == 1 and plan["settings"]["seed"] == 5

    printed = re.search(r"To continue it: (python search/run\.py .*)", first).group(1)
    assert printed == f"python search/run.py --name ovr --resume --storage {storage}"
    resume = [sys.executable, *shlex.split(printed)[1:]]
    resumed = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    table = pd.read_csv(run / "leaderboard.csv")
    assert list(table["status"]) == ["completed", "completed"], table.to_string()
    for d in trial_dirs(run):  # the original data, seed and epochs (none restarted from 1); no third trial
        params = json.loads((d / "params.json").read_text())
        assert params["data"] == str(data) and params["seed"] == 5
        assert set(epochs(d)) == set(range(1, 7)) and epochs(d).count(1) == 1 and epochs(d)[-1] == 6
    assert len(trial_dirs(run)) == 2
    assert json.loads((run / "ensemble.json").read_text())["members"] and (run / "prediction.csv").exists()
    provenance = json.loads((run / "provenance.json").read_text())
    assert "--num-samples 2 --cpus-per-trial 1 --seed 5" in provenance["command"]  # the original, kept
    assert [r["command"].split("run.py ")[1] for r in provenance["resumes"]] == [printed.split("run.py ")[1]]

    # Finished: resuming again (repeating an override with its own value is allowed) runs and rewrites nothing.
    before = file_states(run)
    again = subprocess.run(resume + ["--num-samples", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "has already finished; nothing was run or rewritten" in again.stdout and "Best trial" in again.stdout
    assert file_states(run) == before

    # An override that would change it is refused, in one message, and changes nothing either.
    refused = subprocess.run(resume + ["--num-samples", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--num-samples cannot change a search being resumed (--num-samples 3, it started with 2)" in refused.stderr
    assert file_states(run) == before


@pytest.mark.parametrize("flags, plan_text, message", [
    (["--seed", "7"], None, "--seed cannot change a search being resumed (--seed 7, it started with 5)"),
    (["--cpus-per-trial", "2", "--max-concurrent", "4"], None,
     "--max-concurrent, --cpus-per-trial cannot change a search being resumed (--max-concurrent 4, it started "
     "with 1; --cpus-per-trial 2.0, it started with 1.0)"),
    (["--smoke-test"], None, "--smoke-test cannot change a search being resumed (--smoke-test, it started without)"),
    (["--data", "builtin:digits"], None, "--data cannot change a search being resumed (--data builtin:digits, it "
                                         "started with /data/hw1)"),
    ([], "{not json", "plan.json cannot be read"),
    ([], '{"results_format": 99, "settings": {}}', "was written by another version of resnet-search (results format 99; "
                                                    "this version reads format 2)"),
], ids=["seed", "two-flags", "smoke-test", "data", "damaged", "other-version"])
def test_resume_refuses_what_would_change_the_saved_plan(tmp_path, capsys, flags, plan_text, message):
    """Checked before Ray or the data is touched: one message, exit 2, and the run's files unchanged."""
    from search.run import main as search_main

    run = tmp_path / "results" / "saved"
    run.mkdir(parents=True)
    settings = {"num_samples": 2, "max_concurrent": 1, "seed": 5, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0}
    (run / "plan.json").write_text(plan_text or json.dumps(
        {"results_format": 2, "settings": settings, "smoke_test": False, "data": "/data/hw1"}))
    before = (run / "plan.json").read_bytes()
    code = search_main(["--name", "saved", "--resume", "--storage", str(tmp_path / "results"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert (run / "plan.json").read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["plan.json"]


def test_the_saved_plan_keeps_the_refit_a_search_was_started_with(tmp_path):
    """--resume without --refit refits as the search was started (the refit runs after the last trial)."""
    from types import SimpleNamespace

    from search.saved_plan import read_saved_plan, write_saved_plan
    from search.space_file import SearchSettings

    plan = SimpleNamespace(name="r", space=SimpleNamespace(path=tmp_path / "space.py", settings=SearchSettings()),
                           data="builtin:digits", storage=str(tmp_path), address=None, ensemble_top_k=3,
                           refit="kfold:3", out_dir=tmp_path / "r", data_fingerprint="", forecast=None, budget=None)
    write_saved_plan(plan, smoke_test=False)
    saved = read_saved_plan(tmp_path / "r")
    assert saved["refit"] == "kfold:3" and saved["ensemble_top_k"] == 3
