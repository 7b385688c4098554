"""The study file and TPE's settings, without running a search (tests/test_search.py runs one)."""
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
