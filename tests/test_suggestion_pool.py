"""The suggestion pool (search/suggestion_pool.py): TPE samples in a helper process against the study file; the
driver adopts its trials, never leaves one unused, and survives Ray's pickling of the searcher."""
import pickle
import time

import optuna
from optuna.trial import TrialState

from search.space_file import load_space
from core.files import STUDY_FILE
from search.study import load_study
from search.tuner import make_searcher

SPACE = """
SETTINGS = {"seed": 2, "num_samples": 7, "max_epochs": 3, "tpe_startup_trials": 2, "driver_profile": "large",
            "suggestion_pool": 2}

def define(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    if trial.suggest_categorical("head", ["linear", "mlp"]) == "mlp":
        trial.suggest_categorical("head_hidden", [16, 32])

WARM_STARTS = [{"lr": 0.01, "head": "linear"}]
"""


def wait_until_ready(searcher, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while searcher._pool._ready.qsize() < n:
        assert time.monotonic() < deadline, "the helper prepared nothing"
        time.sleep(0.1)


def finish(searcher, trial_id, value):
    searcher.on_trial_complete(trial_id, {"val_acc": value, "epoch": 3, "training_iteration": 3})


def test_the_driver_adopts_prepared_trials_and_leaves_none_unused(tmp_path):
    path = tmp_path / "space.py"
    path.write_text(SPACE)
    run = tmp_path / "run"
    searcher = make_searcher(load_space(path), study_path=run / STUDY_FILE)
    as_created = pickle.dumps(searcher)  # what Tune's Tuner keeps, and --resume (Tuner.restore) starts from
    configs = {"t0": searcher.suggest("t0")}  # starts the helper; this first one may be the driver's own
    finish(searcher, "t0", 0.5)
    for i in range(1, 4):
        wait_until_ready(searcher, 2)
        configs[f"t{i}"] = searcher.suggest(f"t{i}")
        finish(searcher, f"t{i}", 0.5 + i / 10)
    saved = tmp_path / "searcher.pkl"
    searcher.save(str(saved))  # as Tune does: the helper and its queues stay out of the pickle
    assert searcher._pool is not None and searcher._pool.adopted >= 3
    searcher._pool.close()  # the driver stops (Ctrl-C) with 2 trials prepared and not started

    restored = pickle.loads(as_created)
    restored.restore(str(saved))  # --resume: the 2 prepared trials are FAIL, their parameters enqueued again
    assert restored._pool is None
    orphans = [t for t in load_study(run).trials if t.state == TrialState.FAIL]
    assert len(orphans) == 2
    for i in range(4, 7):
        configs[f"t{i}"] = restored.suggest(f"t{i}")
        finish(restored, f"t{i}", 0.2)
    assert restored._pool.adopted + restored._pool.sampled_by_driver == 3  # new helpers for the last three

    study = load_study(run)
    ran = {t.user_attrs["ray_trial_id"]: t for t in study.trials if t.state != TrialState.FAIL}
    assert len(ran) == 7 and set(ran) == set(configs)  # every Tune trial has its study trial
    assert {t.state for t in ran.values()} == {TrialState.COMPLETE}
    reasked = {t.user_attrs["reasked_from"]: t for t in ran.values() if "reasked_from" in t.user_attrs}
    assert sorted(reasked) == sorted(o.number for o in orphans)  # none prepared and left unused: each ran again
    assert all(reasked[o.number].params == o.params for o in orphans)
    for trial_id, config in configs.items():  # each trial ran what the study holds
        assert ran[trial_id].params == {k: config[k] for k in ran[trial_id].params}
    assert configs["t0"] == {"lr": 0.01, "head": "linear"}  # the warm start first, whoever asked it
    assert len({round(c["lr"], 12) for c in configs.values()}) == 7


def test_without_a_study_file_there_is_no_pool(tmp_path):
    path = tmp_path / "space.py"
    path.write_text(SPACE)
    searcher = make_searcher(load_space(path))  # in memory: the helper could not share the study
    searcher.suggest("a")
    assert searcher._pool is None and isinstance(searcher.study, optuna.Study)


def test_a_helper_that_cannot_start_leaves_the_driver_sampling(tmp_path, capfd):
    from search.suggestion_pool import PoolSpec, SuggestionPool

    pool = SuggestionPool(PoolSpec(str(tmp_path / "gone.py"), {}, str(tmp_path / STUDY_FILE), "optuna", 2), left=3)
    pool._helpers[0].process.wait(timeout=60)
    assert [pool.take() for _ in range(3)] == [None, None, None] and pool.sampled_by_driver == 3
    err = capfd.readouterr().err
    assert "Warning: a suggestion pool helper stopped (SpaceError: Space file" in err and "Traceback" not in err


def test_two_helpers_share_the_pool_with_their_own_streams(tmp_path):
    path = tmp_path / "space.py"
    path.write_text(SPACE.replace('"suggestion_pool": 2', '"suggestion_pool": 4, "suggestion_pool_workers": 2'))
    run = tmp_path / "run"
    searcher = make_searcher(load_space(path), study_path=run / STUDY_FILE)
    configs = {"t0": searcher.suggest("t0")}  # starts both helpers
    finish(searcher, "t0", 0.5)
    for i in range(1, 7):
        wait_until_ready(searcher, 1)
        configs[f"t{i}"] = searcher.suggest(f"t{i}")
        finish(searcher, f"t{i}", 0.5 + i / 20)
    pool = searcher._pool
    assert len(pool._helpers) == 2 and pool.adopted == 6 and all(h.taken for h in pool._helpers)
    assert all(h.process.poll() is not None for h in pool._helpers)  # nothing left to start: both ended
    study = load_study(run)
    assert len(study.trials) == 7 and {t.state for t in study.trials} == {TrialState.COMPLETE}  # none left unused
    assert len({round(c["lr"], 12) for c in configs.values()}) == 7
    assert [h.outstanding for h in pool._helpers] == [0, 0]
