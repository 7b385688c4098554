"""The study file and TPE's settings, without running a search (tests/test_search.py runs one)."""
import re

import optuna
import pytest

from search.space_file import SpaceError, load_space
from search.study import STUDY_FILE, StudyError, journal_storage, load_study
from search.tuner import make_searcher
from search.sampler import make_tpe_sampler

SPACE = '''
SETTINGS = {{"seed": 4, "tpe_startup_trials": 3, {extra}}}

def define(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [16, 32])
'''


def space_with(tmp_path, extra=""):
    path = tmp_path / "space.py"
    path.write_text(SPACE.format(extra=extra))
    return load_space(path)


def test_tpe_settings_reach_the_sampler(tmp_path):
    default = make_tpe_sampler(space_with(tmp_path))
    assert (default._multivariate, default._group, default._constant_liar) == (True, True, True)
    assert default._n_startup_trials == 3
    off = make_tpe_sampler(space_with(tmp_path, '"tpe_multivariate": False, "tpe_group": False, '
                                                '"tpe_constant_liar": False'))
    assert (off._multivariate, off._group, off._constant_liar) == (False, False, False)


def test_group_without_multivariate_is_one_clear_message(tmp_path):
    with pytest.raises(SpaceError, match=r"SETTINGS: tpe_group is True, but needs tpe_multivariate=True"):
        space_with(tmp_path, '"tpe_multivariate": False')


def test_searcher_writes_its_study_to_the_journal_file(tmp_path):
    space = space_with(tmp_path)
    searcher = make_searcher(space, study_path=tmp_path / "run" / STUDY_FILE, study_name="demo")
    config = searcher.suggest("trial_a")
    searcher.on_trial_result("trial_a", {"val_acc": 0.5, "training_iteration": 1})
    searcher.on_trial_complete("trial_a", {"val_acc": 0.5, "training_iteration": 1})  # max_epochs 10: PRUNED
    study = load_study(tmp_path / "run")  # a fresh reader of the file, as optuna-dashboard is
    (trial,) = study.trials
    assert study.study_name == "demo" and study.user_attrs["metric"] == "val_acc"
    assert trial.params == {k: config[k] for k in trial.params}
    assert trial.user_attrs["ray_trial_id"] == "trial_a"
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {1: 0.5}


def test_a_trial_the_study_finished_after_tunes_last_save_is_resumed_without_failing(tmp_path):
    """A killed driver: the study file already holds the trial's last epoch and its end, Tune's last save does not.
    Tune resumes the trial from its epoch-2 checkpoint; its retrained epoch 3 must not make Optuna refuse it."""
    searcher = make_searcher(space_with(tmp_path, '"max_epochs": 3'), study_path=tmp_path / "run" / STUDY_FILE)
    searcher.suggest("trial_a")
    for epoch in (1, 2):
        searcher.on_trial_result("trial_a", {"val_acc": 0.5 + epoch / 10, "epoch": epoch, "training_iteration": epoch})
    saved = tmp_path / "searcher.pkl"
    searcher.save(str(saved))  # Tune's last save
    last = {"val_acc": 0.8, "epoch": 3, "training_iteration": 3}
    searcher.on_trial_complete("trial_a", last)  # written to the study, then the driver is killed

    resumed = make_searcher(space_with(tmp_path, '"max_epochs": 3'), study_path=tmp_path / "run" / STUDY_FILE)
    resumed.restore(str(saved))
    resumed.on_trial_result("trial_a", last)  # the retrained epoch, as the first run reported it
    resumed.on_trial_complete("trial_a", last)
    (trial,) = load_study(tmp_path / "run").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.8
    assert trial.intermediate_values == {1: 0.6, 2: 0.7, 3: 0.8}


def test_the_searchers_snapshot_holds_only_unfinished_trials(tmp_path):
    """Tune pickles the searcher with every experiment snapshot: finished trials stay in the study file only."""
    import pickle

    space = space_with(tmp_path, '"max_epochs": 3, "num_samples": 6')
    searcher = make_searcher(space, study_path=tmp_path / "run" / STUDY_FILE)
    for i in range(4):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5 + i / 10, "epoch": 3, "training_iteration": 3})
    searcher.suggest("t4")
    searcher.on_trial_result("t4", {"val_acc": 0.4, "epoch": 1, "training_iteration": 1})
    saved = tmp_path / "searcher.pkl"
    searcher.save(str(saved))
    assert set(searcher._trials) == {"t0", "t1", "t2", "t3", "t4"}  # the live searcher keeps them all
    assert set(pickle.loads(saved.read_bytes())["_trials"]) == {"t4"}

    resumed = make_searcher(space, study_path=tmp_path / "run" / STUDY_FILE)
    resumed.restore(str(saved))
    assert resumed.trials_started == 5  # what is left to start is counted from every trial, not the pickled ones
    resumed.on_trial_complete("t4", {"val_acc": 0.9, "epoch": 3, "training_iteration": 3})
    resumed.suggest("t5")
    resumed.on_trial_complete("t5", {"val_acc": 0.3, "epoch": 3, "training_iteration": 3})
    trials = load_study(tmp_path / "run").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert [t.value for t in trials][3:] == [0.8, 0.9, 0.3]


def test_an_outcome_optuna_refuses_leaves_the_trial_failed_not_running(tmp_path, monkeypatch):
    searcher = make_searcher(space_with(tmp_path, '"max_epochs": 3'), study_path=tmp_path / "run" / STUDY_FILE)
    searcher.suggest("t")
    tell = searcher._study.tell

    def refuse_values(trial, values=None, state=None):
        if values is not None:
            raise ValueError("refused")
        return tell(trial, values, state=state)

    monkeypatch.setattr(searcher._study, "tell", refuse_values)
    searcher.on_trial_complete("t", {"val_acc": 0.7, "epoch": 3, "training_iteration": 3})
    (trial,) = load_study(tmp_path / "run").trials
    assert trial.state == optuna.trial.TrialState.FAIL and "t" in searcher._finished


def test_loading_a_run_without_a_study_names_the_file(tmp_path):
    with pytest.raises(StudyError, match=rf"No Optuna study at {tmp_path / STUDY_FILE}"):
        load_study(tmp_path)
    storage = journal_storage(tmp_path / STUDY_FILE)
    for name in ("a", "b"):
        optuna.create_study(storage=storage, study_name=name)
    with pytest.raises(StudyError, match="holds 2 studies"):
        load_study(tmp_path)


@pytest.mark.parametrize("damage, says", [
    ("cut", "the file ends in the middle of an operation (cut short)"),
    ("garbage", "is not an Optuna journal operation (damaged, or something was appended)"),
    ("malformed", ":2: this line is not an Optuna journal operation"),
])
def test_a_damaged_study_file_is_one_message_and_a_failing_report(tmp_path, capsys, damage, says):
    from search.report import main as report_main

    storage = journal_storage(tmp_path / STUDY_FILE)
    study = optuna.create_study(storage=storage, study_name="optuna")
    for _ in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 0.5)
    path = tmp_path / STUDY_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = {"cut": b"".join(lines)[:-40], "garbage": b"".join(lines) + b"garbage here\n",
               "malformed": lines[0] + b"{not json\n" + b"".join(lines[2:])}[damage]
    path.write_bytes(damaged)
    with pytest.raises(StudyError, match=re.escape(says)):
        load_study(tmp_path)
    assert report_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1 and "Traceback" not in err
    assert path.read_bytes() == damaged  # read, never repaired behind the user's back


def test_a_trial_left_running_by_a_killed_driver_is_failed_and_its_parameters_run_next(tmp_path):
    """Optuna's JournalStorage has no heartbeat. A driver killed after asking a trial but before Tune's next
    snapshot leaves it RUNNING in the study, unknown to Tune: on --resume it is told FAIL and its parameters are
    enqueued (user attribute reasked_from), so the next trial Tune asks for runs exactly them (docs/faults.md)."""
    path = tmp_path / "run" / STUDY_FILE
    searcher = make_searcher(space_with(tmp_path, '"max_epochs": 3'), study_path=path)
    searcher.suggest("known")
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Tune's last experiment snapshot
    orphan = searcher.suggest("asked_after_the_snapshot")  # the driver dies here
    restored = make_searcher(space_with(tmp_path, '"max_epochs": 3'), study_path=path)
    restored.restore(str(tmp_path / "snapshot.pkl"))  # what --resume does
    states = {t.user_attrs.get("ray_trial_id"): t.state for t in load_study(tmp_path / "run").trials}
    assert states["asked_after_the_snapshot"] == optuna.trial.TrialState.FAIL
    assert states["known"] == optuna.trial.TrialState.RUNNING  # Tune knows it and resumes it
    rerun = restored.suggest("next")
    (next_trial,) = [t for t in load_study(tmp_path / "run").trials if t.user_attrs.get("ray_trial_id") == "next"]
    failed_number = next(t.number for t in load_study(tmp_path / "run").trials
                         if t.user_attrs.get("ray_trial_id") == "asked_after_the_snapshot")
    assert next_trial.user_attrs["reasked_from"] == failed_number
    assert {k: rerun[k] for k in next_trial.params} == {k: orphan[k] for k in next_trial.params}
