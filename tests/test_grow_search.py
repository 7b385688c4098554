"""A finished search grows (--grow): more trials and a wider space, into the same run and the same Optuna study,
keeping every finished trial, with the leaderboard and the ensemble rebuilt over all of them; a growth that would
make the earlier trials incomparable (another dataset, metric, max_epochs, ASHA's rungs) is refused in one message
before anything is written.

The comparability checks and the study's rewrite are tested without Ray; one slow test runs a real search, grows
it, and checks the refusals against it."""
import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search import growth
from search.space_file import SearchSettings
from search.study import journal_storage, load_study, rewrite_distributions, study_file

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.ERROR)


def narrow(trial):
    trial.suggest_categorical("backbone", ["resnet10t"])
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    if trial.suggest_categorical("mixup_prob", [0.0, 0.5]) > 0:
        trial.suggest_float("mixup_alpha", 0.1, 1.0)


def finished_trials(define, n=8, storage=None, name="s"):
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n):
        trial = study.ask()
        define(trial)
        trial.report(0.1 * i, 1)
        study.tell(trial, 0.5 + 0.01 * i if i % 2 else None, state=TrialState.COMPLETE if i % 2 else TrialState.PRUNED)
    return study


def test_a_wider_space_holds_every_earlier_trial_and_names_what_changed():
    trials = finished_trials(narrow).trials

    def wider(trial):  # a new backbone, a wider lr, a new parameter; the conditional branch as it was
        trial.suggest_categorical("backbone", ["resnet10t", "resnet14t"])
        trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        trial.suggest_int("warmup_epochs", 0, 1)
        if trial.suggest_categorical("mixup_prob", [0.0, 0.5]) > 0:
            trial.suggest_float("mixup_alpha", 0.1, 1.0)

    problems, widened = growth.space_problems(trials, wider, "wider.py")
    assert problems == []
    assert widened == {"backbone": CategoricalDistribution(["resnet10t", "resnet14t"]),
                       "lr": FloatDistribution(1e-4, 3e-2, log=True)}
    assert growth.space_problems(trials, narrow, "same.py") == ([], {})


def variant(backbones=("resnet10t",), lr=lambda t: t.suggest_float("lr", 1e-3, 1e-2, log=True)):
    def define(trial):
        trial.suggest_categorical("backbone", list(backbones))
        if lr:
            lr(trial)
        if trial.suggest_categorical("mixup_prob", [0.0, 0.5]) > 0:
            trial.suggest_float("mixup_alpha", 0.1, 1.0)
    return define


@pytest.mark.parametrize("define, message", [
    (variant(lr=None), "wider.py no longer suggests lr (trial #0 ran lr="),
    (variant(backbones=["resnet14t"]), "ran backbone='resnet10t', which wider.py's choices ['resnet14t'] does not hold"),
    (variant(lr=lambda t: t.suggest_float("lr", 2e-3, 1e-2, log=True)), "which wider.py's float 0.002..0.01, log"),
    (variant(lr=lambda t: t.suggest_float("lr", 1e-3, 1e-2)),
     "wider.py suggests lr as float 0.001..0.01, the search as float 0.001..0.01, log: a parameter keeps its kind"),
    (variant(lr=lambda t: t.suggest_int("lr", 0, 1)), "suggests lr as int 0..1"),
], ids=["removed", "choice-removed", "narrower", "log-changed", "kind-changed"])
def test_a_space_that_drops_an_earlier_trial_is_refused(define, message):
    problems, _ = growth.space_problems(finished_trials(narrow).trials, define, "wider.py")
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize("change, message", [
    ({"metric": "val_loss", "mode": "min"}, "sets metric 'val_loss', but the search's 8 trials ran with metric 'val_acc'"),
    ({"max_epochs": 6}, "sets max_epochs 6, but the search's 8 trials ran with max_epochs 4"),
    ({"grace_period": 2}, "sets grace_period 2, but the search's 8 trials ran with grace_period 1 (ASHA's rungs"),
    ({"reduction_factor": 3}, "sets reduction_factor 3"),
    ({"train_size": 64}, "sets train_size 64"),
    ({"trial": {"pretrained": True}}, "fixes the trial key pretrained to True, but the search's trials ran with False"),
], ids=["metric", "max_epochs", "grace_period", "reduction_factor", "train_size", "trial-key"])
def test_settings_that_make_the_earlier_trials_incomparable_are_named(change, message):
    saved = {**SearchSettings(max_epochs=4, grace_period=1, reduction_factor=2, train_size=32).__dict__,
             "trial": {"pretrained": False}}
    new = SearchSettings(**{**saved, **change})
    problems, ignored = growth.settings_problems(saved, new, "wider.py", 8)
    assert any(message in p for p in problems), problems


def test_other_settings_are_the_searchs_own_and_named_as_not_used():
    saved = {**SearchSettings(cpus_per_trial=1).__dict__}
    problems, ignored = growth.settings_problems(saved, SearchSettings(cpus_per_trial=8, num_samples=99), "w.py", 3)
    assert problems == [] and ignored == ["cpus_per_trial (8 there, 1 in the search)"]


def test_the_total_must_grow():
    with pytest.raises(growth.GrowthError, match="--grow needs --num-samples TOTAL"):
        growth.check_samples(None, 16, "q")
    with pytest.raises(growth.GrowthError, match="the search has 16 trial\\(s\\) already"):
        growth.check_samples(16, 16, "q")
    growth.check_samples(17, 16, "q")


def test_the_study_is_rewritten_with_the_wider_distributions_and_nothing_else_changes(tmp_path):
    storage = journal_storage(study_file(tmp_path))
    before = finished_trials(narrow, storage=storage, name="run").trials
    study = optuna.load_study(study_name="run", storage=storage)
    study.set_user_attr("metric", "val_acc")
    wide = CategoricalDistribution(["resnet10t", "resnet14t"])
    # Optuna refuses the new choices in the study as it is: why the rewrite exists
    with pytest.raises(ValueError, match="does not support dynamic value space"):
        study.ask().suggest_categorical("backbone", ["resnet10t", "resnet14t"])
    first = study_file(tmp_path).read_bytes()

    assert rewrite_distributions(tmp_path, {"backbone": wide}, tmp_path / "backup.log") == len(before) + 1
    assert (tmp_path / "backup.log").read_bytes() == first
    after = load_study(tmp_path)
    assert after.study_name == "run" and after.user_attrs["metric"] == "val_acc"
    old = {t.number: t for t in before}
    for t in after.trials[: len(before)]:
        o = old[t.number]
        assert (t.state, t.values, t.params, t.intermediate_values, t.datetime_start) == \
            (o.state, o.values, o.params, o.intermediate_values, o.datetime_start)
        assert t.distributions["backbone"] == wide and t.distributions["lr"] == o.distributions["lr"]
    assert after.trials[-1].state == TrialState.FAIL  # the trial left RUNNING above: ended, as the searcher would
    trial = after.ask()  # and now the wider space's trials go into the same study
    assert trial.suggest_categorical("backbone", ["resnet10t", "resnet14t"]) in ("resnet10t", "resnet14t")


def test_a_grown_searcher_asks_the_new_warm_starts_and_ends_orphans(tmp_path):
    from search.searcher import SAMPLED_BY, OptunaTPESearch

    storage = journal_storage(study_file(tmp_path))
    study = finished_trials(narrow, n=4, storage=storage, name="run")
    ran = dict(study.trials[0].params)
    study.ask()  # asked, never reached Tune
    new_point = {"backbone": "resnet14t", "lr": 5e-3, "mixup_prob": 0.0}
    searcher = OptunaTPESearch(define=narrow, metric="val_acc", mode="max", max_epochs=2,
                               sampler=optuna.samplers.RandomSampler(seed=0), warm_starts=[ran, new_point],
                               storage=storage, study_name="run", startup_trials=1, grows=True)
    states = [t.state for t in searcher.study.trials]
    assert states[:4] == [TrialState.PRUNED, TrialState.COMPLETE] * 2 and states[4] == TrialState.FAIL
    waiting = [t for t in searcher.study.trials if t.state == TrialState.WAITING]
    assert [t.params or t.system_attrs["fixed_params"] for t in waiting] == [new_point, study.trials[4].params]
    assert waiting[0].user_attrs[SAMPLED_BY] == "warm_start"


def test_asha_cuts_a_growths_trials_against_the_earlier_trials_values():
    """The growth's ASHA (a new scheduler) starts with the earlier trials' values at its rungs, as if they had run
    in it: a new trial below them at a rung stops there; without them, the first arrival always continues."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from compat.ray_internals import seed_asha_rungs

    def decision(scheduler, value):
        scheduler.set_search_properties("val_acc", "max")
        trial = SimpleNamespace(trial_id="new")
        scheduler.on_trial_add(None, trial)
        return scheduler.on_trial_result(None, trial, {"epoch": 1, "val_acc": value, "training_iteration": 1})

    earlier = {"a": {1: 0.8, 2: 0.9}, "b": {1: 0.7}, "c": {1: 0.9, 2: 0.95}}
    seeded = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    assert seed_asha_rungs(seeded, earlier, maximize=True) == 5
    assert decision(seeded, 0.5) == TrialScheduler.STOP
    assert decision(ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2), 0.5) == \
        TrialScheduler.CONTINUE


# --- a real search, grown -----------------------------------------------------------------------------------

SPACE = '''
SETTINGS = {{"num_samples": {n}, "max_epochs": {epochs}, "grace_period": 1, "reduction_factor": 2,
            "tpe_startup_trials": 2, "keep_checkpoints": 1, "cpus_per_trial": 1, "max_concurrent": 2,
            "train_size": 32, "eval_size": 32, {extra}
            "trial": {{"pretrained": False, "num_workers": 0, "batch_size": 16}}}}

def define(trial):
    trial.suggest_categorical("backbone", {backbones})
    trial.suggest_float("lr", {low}, {high}, log=True)
'''


def write_space(path: Path, n=3, epochs=2, backbones=("resnet10t",), low=3e-3, high=3e-2, extra="") -> Path:
    path.write_text(SPACE.format(n=n, epochs=epochs, backbones=list(backbones), low=low, high=high, extra=extra))
    return path


def run(*argv, timeout=900):
    import subprocess

    return subprocess.run([sys.executable, "search/run.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(run_dir: Path) -> dict:
    return {p.relative_to(run_dir).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_finished_search_grows_into_the_same_run_and_study(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    from conftest import make_image_folder

    data = make_image_folder(tmp_path / "data")
    storage = tmp_path / "results"
    first = run("--space", str(write_space(tmp_path / "narrow.py")), "--data", str(data), "--storage", str(storage),
                "--name", "g")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run_dir = storage / "g"
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    old_ids = set(board["trial_id"])
    old_best = dict(zip(board["trial_id"], board["best_checkpoint"]))
    ensemble_before = (run_dir / "ensemble.json").read_bytes()
    assert len(old_ids) == 3

    # Refused, each in one message, before anything is written: the run folder is exactly as it was.
    other = make_image_folder(tmp_path / "other", classes=("a", "b"))
    cases = [
        (["--data", str(other)], f"--data {other} is another dataset than the {data}"),
        (["--space", str(write_space(tmp_path / "m.py", extra='"metric": "val_loss", "mode": "min",'))],
         "sets metric 'val_loss', but the search's 3 trials ran with metric 'val_acc'"),
        (["--space", str(write_space(tmp_path / "e.py", epochs=3))],
         "sets max_epochs 3, but the search's 3 trials ran with max_epochs 2"),
        (["--space", str(write_space(tmp_path / "r.py", extra='"reduction_factor": 3,'))], "sets reduction_factor 3"),
        (["--space", str(write_space(tmp_path / "n.py", low=3.1e-2, high=5e-2))], "does not hold"),  # narrower
        ([], None),  # no --num-samples
    ]
    from search.run import main as search_main

    def refused(*argv):  # in this process: the refusals come before Ray starts (nor does one here)
        capsys.readouterr()
        code = search_main(["--name", "g", "--grow", "--storage", str(storage), *argv])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    monkeypatch.chdir(ROOT)
    before = snapshot(run_dir)
    for flags, message in cases:
        refusal = refused(*(["--num-samples", "5"] if message else []), *flags)
        err = refusal.stderr
        assert refusal.returncode == 2 and err.startswith("error: ") and "Traceback" not in err, (flags, err)
        assert (message or "--grow needs --num-samples TOTAL") in err, (flags, err)
        assert len(err.strip().splitlines()) == 1, err
        if message:
            assert "nothing was written" in err and "start a new search under another --name" in err, err
    # The same path, but the dataset changed since the search indexed it (its fingerprint): refused alike.
    from PIL import Image

    Image.new("RGB", (24, 24), (7, 99, 201)).save(data / "train" / "cat" / "extra.png")
    refusal = refused("--num-samples", "5")
    assert refusal.returncode == 2 and "--grow: the dataset at" in refusal.stderr and "changed" in refusal.stderr, \
        refusal.stderr
    (data / "train" / "cat" / "extra.png").unlink()
    assert snapshot(run_dir) == before

    # Grown: 3 -> 5 trials, a new backbone and a wider lr, into the same study; Ctrl-C once the growth's first
    # trial has reported an epoch, then --resume finishes the growth.
    import signal
    import subprocess
    import time

    wider = write_space(tmp_path / "wider.py", backbones=("resnet10t", "resnet14t"), low=1e-3)
    log = open(tmp_path / "grow.log", "w")
    driver = subprocess.Popen([sys.executable, "search/run.py", "--name", "g", "--grow", "--num-samples", "5",
                               "--space", str(wider), "--storage", str(storage)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not any((d / "result.json").is_file() and (d / "result.json").stat().st_size
                  for d in (run_dir / "grow-1").glob("*/")):
        assert driver.poll() is None, (tmp_path / "grow.log").read_text()[-3000:]
        assert time.time() < deadline, "the growth made no progress"
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    code = driver.wait(120)
    log.close()
    interrupted = (tmp_path / "grow.log").read_text()
    assert code in (0, 130), interrupted[-3000:]
    if code == 130:  # (the growth can finish its two short trials before the signal lands)
        assert f"To continue it: python search/run.py --name g --resume --storage {storage}" in interrupted
        assert json.loads((run_dir / "ensemble.json").read_text()) == json.loads(ensemble_before)
        grown = run("--name", "g", "--resume", "--storage", str(storage))
    else:
        grown = subprocess.CompletedProcess([], 0, interrupted, "")
    out = grown.stdout + grown.stderr
    assert grown.returncode == 0, out[-4000:]
    assert "Grew from 3 to 5 trials (grow-1" in grown.stdout, out[-3000:]
    print(interrupted[-2500:], "\n--- resumed ---\n", out[-2500:])
    board = pd.read_csv(run_dir / "leaderboard.csv", dtype={"trial_id": str})
    assert len(board) == 5 and old_ids < set(board["trial_id"]), board.to_string()
    assert board["status"].isin(["completed", "stopped_early"]).all(), board.to_string()
    new_ids = set(board["trial_id"]) - old_ids
    assert all((run_dir / "grow-1" / t).is_dir() for t in new_ids)
    # every earlier trial's best checkpoint is still there, and still the leaderboard's
    for trial_id, path in old_best.items():
        assert board.set_index("trial_id").loc[trial_id, "best_checkpoint"] == path and Path(path).is_dir()

    study = load_study(run_dir)
    assert len(study.trials) == 5 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_id) == set(board["trial_id"])
    assert all(t.distributions["backbone"].choices == ("resnet10t", "resnet14t") for t in study.trials)
    assert (run_dir / "optuna_study.before-grow-1.log").is_file() and (run_dir / "space.before-grow-1.py").is_file()
    assert (run_dir / "space.py").read_text() == wider.read_text()

    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["settings"]["num_samples"] == 5
    assert [(g["experiment"], g["from"], g["to"]) for g in plan["growth"]] == [("grow-1", 3, 5)]
    manifest = json.loads((run_dir / "ensemble.json").read_text())
    assert (run_dir / "ensemble.json").read_bytes() != ensemble_before
    # rebuilt from every trial: its candidates are the leaderboard's trials that ran all epochs, old and new alike
    completed = set(board.loc[board["status"] == "completed", "trial_id"])
    assert set(manifest["selection"]["candidates"]) == completed, (manifest["selection"], board.to_string())
    assert {m["trial_id"] for m in manifest["members"]} <= completed

    # Finished again: --resume prints the summary (it grew) and rewrites nothing.
    before = snapshot(run_dir)
    again = run("--name", "g", "--resume", "--storage", str(storage), timeout=300)
    assert again.returncode == 0 and "has already finished" in again.stdout and "Grew from 3 to 5" in again.stdout
    assert snapshot(run_dir) == before
