"""report_epochs (core/report_policy.py): a trial reports to the search only on the epochs it must, and
every epoch still reaches metrics.jsonl, the Optuna study and an exact resume under Tune (TensorBoard's steps:
tests/test_tensorboard_logger.py)."""
import json
from pathlib import Path

import optuna
import pytest

from conftest import fit_with_one_retry, reported_rows
from search.space_file import SpaceError, load_space
from search.study import STUDY_FILE, load_study
from search.tuner import make_searcher
from core.config import ConfigError, TrialConfig
from core.report_policy import (CHECKPOINT_OF_REPORTED_EPOCH, EPOCHS_BETWEEN, checkpoint_of_reported_epoch,
                                     decide_before_checkpoint, expand, parse_report_epochs, report_due)

TINY = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
        "lr": 0.01, "seed": 1}


def test_parse_and_due():
    assert parse_report_epochs("every") is None
    assert parse_report_epochs("3, 9,27") == {3, 9, 27}
    assert parse_report_epochs("") == frozenset()
    due = lambda e, ck=False: report_due(e, epochs=30, report_epochs=frozenset({3, 9, 27}), checkpoint=ck)
    assert [e for e in range(1, 31) if due(e)] == [3, 9, 27, 30]        # the rungs and the last
    assert due(5, ck=True)                                              # a checkpoint must reach Tune
    assert all(report_due(e, epochs=5, report_epochs=None, checkpoint=False) for e in range(1, 6))


@pytest.mark.parametrize("value, message", [
    ("3,x", "'x' is not an epoch"), ("0", "'0' is not an epoch"), ("-1", "'-1' is not an epoch")])
def test_bad_report_epochs_is_one_clear_message(value, message):
    with pytest.raises(ConfigError, match=f"key 'report_epochs' has value '{value}': {message}"):
        TrialConfig.from_dict({"report_epochs": value})


def test_expand_puts_the_epochs_between_first():
    result = {"epoch": 3, "val_acc": 0.3, EPOCHS_BETWEEN: [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2}]}
    assert [r["epoch"] for r in expand(result)] == [1, 2, 3]
    assert EPOCHS_BETWEEN not in expand(result)[-1]
    assert expand({"epoch": 1}) == [{"epoch": 1}]


def test_the_search_fills_in_ashas_rungs_and_owns_the_key(tmp_path):
    path = tmp_path / "space.py"
    settings = '"max_epochs": 30, "grace_period": 3, "reduction_factor": 3'
    path.write_text(f"SETTINGS = {{{settings}, 'driver_profile': 'large'}}\n"
                    "def define(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1)\n")
    assert load_space(path).trial_config({})["report_epochs"] == "3,9,27"  # the large profile's default
    assert load_space(path).replace_settings(report_epochs="every").trial_config({})["report_epochs"] == "every"
    path.write_text(f"SETTINGS = {{{settings}, 'report_epochs': 'decisions'}}\n"
                    "def define(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1)\n")
    with pytest.raises(SpaceError, match="report_epochs is 'decisions', which only driver_profile 'large' allows"):
        load_space(path)
    path.write_text(f"SETTINGS = {{{settings}, 'trial': {{'report_epochs': '2'}}}}\n"
                    "def define(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1)\n")
    with pytest.raises(SpaceError, match="trial sets 'report_epochs', which the search sets for every trial"):
        load_space(path)


def test_a_trial_reports_only_rungs_checkpoints_and_last_yet_writes_every_epoch(toy_data, tmp_path):
    from trainable.local_sink import LocalSink
    from trainable.trial import train_trial

    class Recording(LocalSink):
        calls = []

        def send(self, metrics, checkpoint_dir):
            self.calls.append((metrics["epoch"], [r["epoch"] for r in metrics.get(EPOCHS_BETWEEN, [])],
                               checkpoint_dir is not None))
            super().send(metrics, checkpoint_dir)

    out = tmp_path / "run"
    config = {**TINY, "epochs": 5, "resume_state_every": 4, "checkpoint_new_bests": False, "report_epochs": "2",
              "data": str(toy_data)}
    final = train_trial(config, Recording(out, printer=lambda _: None, keep=10))
    # epoch 2: a rung; 4: a checkpoint; 5: the last. Epochs 1 and 3 travel with the next report.
    assert Recording.calls == [(2, [1], False), (4, [3], True), (5, [], True)]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5] and EPOCHS_BETWEEN not in final
    assert final == rows[-1]


def test_the_study_gets_every_epoch_at_its_own_step(tmp_path):
    path = tmp_path / "space.py"
    path.write_text("SETTINGS = {'max_epochs': 6, 'grace_period': 2}\n"
                    "def define(trial):\n    trial.suggest_float('lr', 1e-3, 1e-1)\n")
    searcher = make_searcher(load_space(path), study_path=tmp_path / "run" / STUDY_FILE)
    searcher.suggest("t")
    row = lambda e: {"epoch": e, "val_acc": e / 10}
    searcher.on_trial_result("t", {**row(2), "training_iteration": 1, EPOCHS_BETWEEN: [row(1)]})
    # ASHA stops it at its next report: Tune hands that one to on_trial_complete only.
    searcher.on_trial_complete("t", {**row(4), "training_iteration": 2, EPOCHS_BETWEEN: [row(3)]})
    (trial,) = load_study(tmp_path / "run").trials
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
    assert trial.state == optuna.trial.TrialState.PRUNED


def test_under_tune_a_failed_trial_resumes_exactly_and_reports_only_what_it_must(toy_data, tmp_path, ray_session):
    """report_epochs '' (no rungs), checkpoints at epochs 2 and 4: Tune hears of epochs 2 and 4 only. A trial that
    fails while reporting epoch 4 is retried from epoch 2's checkpoint, trains 3 and 4 again, and they equal
    those of the same config that never failed."""
    from ray import tune

    from worker.tune_sink import TuneSink
    from trainable.trial import train_trial

    marker = tmp_path / "failed-once"

    def flaky_trial(config):
        fail, config = config["fail"], {k: v for k, v in config.items() if k != "fail"}

        class FailingOnce(TuneSink):
            def send(self, metrics, checkpoint_dir):
                if fail and metrics["epoch"] == 4 and not marker.exists():
                    marker.touch()
                    raise RuntimeError("node lost")
                super().send(metrics, checkpoint_dir)

        train_trial(config, FailingOnce())

    config = {**TINY, "epochs": 4, "resume_state_every": 2, "checkpoint_new_bests": False, "report_epochs": "",
              "keep_checkpoints": 1, "data": str(toy_data), "fail": tune.grid_search([False, True])}
    results = {r.config["fail"]: r for r in fit_with_one_retry(flaky_trial, config, tmp_path / "runs", "sparse")}
    assert marker.exists()

    clean, retried = reported_rows(results[False]), reported_rows(results[True])
    assert [(r["epoch"], r["training_iteration"]) for r in clean] == [(2, 1), (4, 2)]
    assert [r["epoch"] for r in retried] == [2, 4]  # the failed report of epoch 4 never reached Tune
    clean_rows = [row for r in clean for row in expand(r)]
    retried_rows = [row for r in retried for row in expand(r)]
    assert [r["epoch"] for r in clean_rows] == [r["epoch"] for r in retried_rows] == [1, 2, 3, 4]
    for got, want in zip(retried_rows[2:], clean_rows[2:]):  # epochs 3 and 4, trained again after the retry
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert got[key] == want[key], (got["epoch"], key)


def test_checkpoint_after_decision_only_on_decided_epochs_before_the_last():
    decide = lambda e, after=True, rungs=frozenset({3, 9, 27}): decide_before_checkpoint(
        e, epochs=30, report_epochs=rungs, after_decision=after)
    assert [e for e in range(1, 31) if decide(e)] == [3, 9, 27]           # never the last epoch
    assert not decide(3, after=False) and not decide(3, rungs=None)
    marked = checkpoint_of_reported_epoch({"epoch": 3, "val_acc": 0.5})
    assert marked[CHECKPOINT_OF_REPORTED_EPOCH] and marked["val_acc"] == 0.5   # Tune ranks it by its metrics
    assert expand(marked) == []                                         # the epoch was reported already
    with pytest.raises(ConfigError, match="checkpoint_after_decision is True, but report_epochs is 'every'"):
        TrialConfig.from_dict({"checkpoint_after_decision": True})


def test_a_trial_saves_a_decided_epochs_checkpoint_only_after_it_goes_on(toy_data, tmp_path):
    from trainable.local_sink import LocalSink
    from trainable.trial import train_trial

    class Stopped(Exception):
        pass

    class Recording(LocalSink):
        def __init__(self, *args, stop_at=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls, self.stop_at = [], stop_at

        def send(self, metrics, checkpoint_dir):
            self.calls.append((metrics["epoch"], bool(metrics.get(CHECKPOINT_OF_REPORTED_EPOCH)),
                               checkpoint_dir is not None))
            if metrics["epoch"] == self.stop_at:
                raise Stopped  # as Tune ends a trial its scheduler stops, inside report()
            super().send(metrics, checkpoint_dir)

    config = {**TINY, "epochs": 5, "resume_state_every": 2, "checkpoint_new_bests": False, "report_epochs": "2",
              "checkpoint_after_decision": True, "data": str(toy_data)}
    goes_on = Recording(tmp_path / "on", printer=lambda _: None, keep=10)
    train_trial(config, goes_on)
    # Epoch 2 (a rung with a checkpoint due): metrics first, then its checkpoint marked; 4 and 5 as before.
    assert goes_on.calls == [(2, False, False), (2, True, True), (4, False, True), (5, False, True)]
    rows = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]                # each epoch once
    assert sorted(d.name for d in (tmp_path / "on" / "checkpoints").iterdir()) == [
        "epoch_0002", "epoch_0004", "epoch_0005"]

    stopped = Recording(tmp_path / "stopped", printer=lambda _: None, keep=10, stop_at=2)
    with pytest.raises(Stopped):
        train_trial(config, stopped)
    assert stopped.calls == [(2, False, False)]                        # stopped before any checkpoint was saved
    assert not (tmp_path / "stopped").exists()


def test_under_tune_asha_stopped_trials_write_no_checkpoint_at_their_rung(toy_data, tmp_path, ray_session):
    """ASHA (rung at epoch 2, rf 2) over 4 trials: every trial that went on saved epoch 2's checkpoint after
    the decision, in a second report of that epoch; every trial stopped at epoch 2 saved none. The study and
    metrics see each epoch once."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from worker.tune_trial import tune_trial

    config = {**TINY, "epochs": 4, "resume_state_every": 2, "checkpoint_new_bests": False, "report_epochs": "2",
              "checkpoint_after_decision": True, "keep_checkpoints": 2, "data": str(toy_data),
              "lr": tune.grid_search([0.05, 1e-5, 0.02, 1e-6])}
    tuner = tune.Tuner(
        tune.with_resources(tune_trial, {"cpu": 1}), param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=1,
                                    scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=2,
                                                            reduction_factor=2)),
        run_config=tune.RunConfig(name="decide", storage_path=str(tmp_path / "runs"), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2,
                                                                          checkpoint_score_attribute="val_acc",
                                                                          checkpoint_score_order="max")))
    results = list(tuner.fit())
    assert all(r.error is None for r in results) and len(results) == 4
    outcomes = set()
    for result in results:
        rows = reported_rows(result)
        epochs = [r["epoch"] for r in rows]
        saved = sorted(Path(c.path).name for c, _ in result.best_checkpoints)
        if epochs[-1] == 2:    # ASHA stopped it at the rung: one report, no checkpoint written
            assert epochs == [2] and saved == [] and result.checkpoint is None
            outcomes.add("stopped")
        else:
            assert epochs == [2, 2, 4] and [bool(r.get(CHECKPOINT_OF_REPORTED_EPOCH)) for r in rows] == [False, True, False]
            assert [bool(r.get("checkpoint_dir_name")) for r in rows] == [False, True, True]
            assert len(saved) == 2                                       # epochs 2 and 4, ranked by val_acc
            assert [row["epoch"] for r in rows for row in expand(r)] == [1, 2, 3, 4]
            outcomes.add("went on")
    # One at a time: the first trial (lr 0.05) sets the rung's cutoff, the lr 1e-5 one falls below it.
    assert outcomes == {"stopped", "went on"}


def test_a_trial_lost_between_a_decision_and_its_checkpoint_resumes_exactly(toy_data, tmp_path):
    """checkpoint_after_decision, rungs at 2 and 4: the run dies after epoch 4's metrics went out but before its
    checkpoint did. Resumed, it continues from epoch 2's checkpoint and its epochs 3-5 equal a run never lost."""
    from trainable.local_sink import LocalSink
    from trainable.trial import train_trial

    class Lost(Exception):
        pass

    class LostBeforeCheckpoint(LocalSink):
        def send(self, metrics, checkpoint_dir):
            if metrics["epoch"] == 4 and metrics.get(CHECKPOINT_OF_REPORTED_EPOCH):
                raise Lost
            super().send(metrics, checkpoint_dir)

    config = {**TINY, "epochs": 5, "resume_state_every": 2, "checkpoint_new_bests": False, "report_epochs": "2,4",
              "checkpoint_after_decision": True, "data": str(toy_data)}
    train_trial(config, LocalSink(tmp_path / "straight", printer=lambda _: None, keep=10))
    with pytest.raises(Lost):
        train_trial(config, LostBeforeCheckpoint(tmp_path / "lost", printer=lambda _: None, keep=10))
    assert sorted(d.name for d in (tmp_path / "lost" / "checkpoints").iterdir()) == ["epoch_0002"]
    train_trial(config, LocalSink(tmp_path / "lost", resume=True, printer=lambda _: None, keep=10))

    read = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    straight, resumed = read("straight"), read("lost")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5]   # epochs 3 and 4 trained again, each row once
    for got, want in zip(resumed[2:], straight[2:]):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert got[key] == want[key], (got["epoch"], key)
