"""The search's TensorBoard logger speaks the project's names: each trial's curves stepped by its own epochs, one
HParams experiment listing every searched parameter (conditional ones too), `status` and the trial's metrics,
and one session per trial with its status; none of Tune's internals."""
import pickle

import optuna
import pytest

from core.report_policy import EPOCHS_BETWEEN
from search.trial_tensorboard import STATUS, TrialTensorBoard

PARAMETERS = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
              "head": optuna.distributions.CategoricalDistribution(["linear", "mlp"]),
              "head_hidden": optuna.distributions.CategoricalDistribution([64, 128])}  # only on the mlp branch


class FakeTrial:  # what the logger reads of Tune's Trial
    def __init__(self, root, name="t1", params=None, last_result=None):
        self.local_experiment_path = str(root)
        self.local_path = str(root / name)
        self.evaluated_params = params or {"lr": 0.01, "head": "linear"}
        self.last_result = last_result or {}


def accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def plugin_data(acc, tag):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    return HParamsPluginData.FromString(acc.summary_metadata[tag].plugin_data.content)


def logger(metric="val_acc"):
    return TrialTensorBoard(metric=metric, max_epochs=4, parameters=PARAMETERS)


def test_every_epoch_is_stepped_by_its_own_number_under_the_projects_names(tmp_path):
    log, trial = logger(), FakeTrial(tmp_path)
    log.log_trial_start(trial)
    log.log_trial_result(1, trial, {"epoch": 3, "val_acc": 0.3, "val_loss": 2.0, "training_iteration": 1,
                                    "timesteps_total": 9, "done": False,
                                    EPOCHS_BETWEEN: [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2}]})
    log.log_trial_result(2, trial, {"epoch": 4, "val_acc": 0.25, "training_iteration": 2})
    trial.last_result = {"epoch": 4, "val_acc": 0.25}
    log.log_trial_end(trial)
    acc = accumulator(trial.local_path)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val_acc")] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.25)]
    assert [round(e.value, 6) for e in acc.Scalars("best_val_acc")] == [0.1, 0.2, 0.3, 0.3]  # the running best
    tags = set(acc.Tags()["scalars"])
    assert not any(t.startswith("ray/") or t in ("done", "timesteps_total", "training_iteration") for t in tags)


def test_the_experiment_lists_every_searched_parameter_and_the_trials_metrics(tmp_path):
    log, trial = logger(), FakeTrial(tmp_path)
    log.log_trial_start(trial)
    experiment = plugin_data(accumulator(tmp_path), "_hparams_/experiment").experiment
    assert [h.name for h in experiment.hparam_infos] == ["head", "head_hidden", "lr", STATUS]
    domains = {h.name: list(h.domain_discrete.values) for h in experiment.hparam_infos if h.HasField("domain_discrete")}
    assert [v.string_value for v in domains["head"]] == ["linear", "mlp"]
    assert [v.number_value for v in domains["head_hidden"]] == [64.0, 128.0]
    assert {v.string_value for v in domains[STATUS]} == {"completed", "stopped_early", "failed"}
    lr = next(h for h in experiment.hparam_infos if h.name == "lr")
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (1e-4, 1e-1)
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[0] == "best_val_acc" and {"val_acc", "val_macro_f1", "val_loss", "train_loss", "lr"} <= set(metrics)
    log.log_trial_start(FakeTrial(tmp_path, "t2"))  # written once per search
    assert len(list(tmp_path.glob("events.out.tfevents*"))) == 1


@pytest.mark.parametrize("last, failed, status", [
    ({"epoch": 4, "val_acc": 0.5}, False, "completed"),
    ({"epoch": 2, "val_acc": 0.5}, False, "stopped_early"),
    ({"epoch": 1, "fatal_error": "ConfigError: bad", "val_acc": float("nan")}, False, "failed"),
    ({}, True, "failed"),
])
def test_each_trial_ends_with_its_session_and_status(tmp_path, last, failed, status):
    from tensorboardX.proto.api_pb2 import Status

    log, trial = logger(), FakeTrial(tmp_path, last_result=last)
    log.log_trial_start(trial)
    if last.get("epoch"):
        log.log_trial_result(1, trial, {**last, "training_iteration": 1})
    log.log_trial_end(trial, failed=failed)  # a trial that failed before its first result gets its session too
    acc = accumulator(trial.local_path)
    start = plugin_data(acc, "_hparams_/session_start_info").session_start_info
    assert start.hparams["lr"].number_value == 0.01 and start.hparams["head"].string_value == "linear"
    assert start.hparams[STATUS].string_value == status
    end = plugin_data(acc, "_hparams_/session_end_info").session_end_info
    assert end.status == Status.Value("STATUS_FAILURE" if status == "failed" else "STATUS_SUCCESS")


def test_the_best_follows_the_metrics_direction(tmp_path):
    log, trial = logger("val_loss"), FakeTrial(tmp_path)
    log.log_trial_start(trial)
    for epoch, loss in enumerate([0.9, 0.5, 0.7], start=1):
        log.log_trial_result(epoch, trial, {"epoch": epoch, "val_loss": loss, "training_iteration": epoch})
    log.log_trial_end(trial)
    assert [round(e.value, 6) for e in accumulator(trial.local_path).Scalars("best_val_loss")] == [0.9, 0.5, 0.5]


def test_a_trial_started_again_after_a_failure_writes_a_new_file_and_pickling_keeps_no_file_open(tmp_path):
    import time

    log, trial = logger(), FakeTrial(tmp_path)
    log.log_trial_start(trial)
    log.log_trial_result(1, trial, {"epoch": 1, "val_acc": 0.5, "training_iteration": 1})
    assert pickle.loads(pickle.dumps(log))._writers == {}  # Tune pickles its callbacks with the experiment
    time.sleep(1.1)  # event file names carry the second they were opened in
    log.log_trial_start(trial)  # Tune restarts the failed trial: its old file is closed
    log.log_trial_result(2, trial, {"epoch": 2, "val_acc": 0.6, "training_iteration": 2})
    log.on_experiment_end(trials=[trial])  # Ctrl-C: every open file is closed
    assert len(list((tmp_path / "t1").glob("events.out.tfevents*"))) == 2
    assert [e.step for e in accumulator(trial.local_path).Scalars("val_acc")] == [1, 2]
