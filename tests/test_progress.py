"""Progress output: a trial's batch lines at the chosen cadence, and the search's status line from fake trials."""
import re
from types import SimpleNamespace

import pytest

from core.epoch_reporter import Sink
from search.progress import SearchProgress, duration

TINY = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
        "lr": 0.01, "seed": 1}


class Recording(Sink):
    def __init__(self):
        self.rows, self.lines = [], []

    def send(self, metrics, checkpoint_dir):
        self.rows.append(metrics)

    def progress(self, line):
        self.lines.append(line)


@pytest.mark.parametrize("every, batches_printed", [(1, [1, 2, 3]), (2, [2]), (0, [])])
def test_a_trial_prints_batch_progress_every_n_batches(toy_data, every, batches_printed):
    from trainable.trial import train_trial

    sink = Recording()  # toy_data: 36 train images, batch 8 with drop_last -> 4 batches an epoch
    train_trial({**TINY, "epochs": 2, "log_every_batches": every, "data": str(toy_data)}, sink)
    expected = [f"epoch {e}/2 batch {b}/4" for e in (1, 2) for b in batches_printed]
    assert [line.split(" | ")[0] for line in sink.lines] == expected  # never on the last batch: the epoch line is next
    for line in sink.lines:
        assert re.fullmatch(r"epoch \d/2 batch \d/4 \| loss \d+\.\d{4} \| \d+ img/s \| epoch left \d+s", line), line


def test_the_epoch_reports_the_lr_it_trained_at_not_the_next_one(toy_data):
    from trainable.trial import train_trial

    sink = Recording()  # one cosine epoch: the schedule ends at min_lr, but the epoch trained from lr down
    train_trial({**TINY, "epochs": 1, "lr": 0.02, "min_lr": 1e-6, "head_lr_mult": 2.0, "data": str(toy_data)}, sink)
    assert sink.rows[0]["lr"] == pytest.approx(0.02) and sink.rows[0]["head_lr"] == pytest.approx(0.04)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def trial(trial_id, status="RUNNING"):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result={})


class CostField:
    def status_fields(self):
        return {"cost": "$0.12"}


class BrokenField:
    def status_fields(self):
        raise RuntimeError("no prices")


def test_the_status_line_counts_trials_best_epochs_and_time_left():
    clock, printed = Clock(), []
    progress = SearchProgress(metric="val_acc", num_samples=6, max_epochs=4, fields=[CostField(), BrokenField()],
                              printer=printed.append, clock=clock, every_s=30)
    progress.setup()
    a, b, c = trial("aaaa"), trial("bbbb"), trial("cccc", "PENDING")
    trials = [a, b, c]
    for epoch, value in ((1, 0.5), (2, 0.7)):
        progress.on_trial_result(0, trials, a, {"epoch": epoch, "val_acc": value})
    progress.on_trial_result(0, trials, b, {"epoch": 1, "val_acc": 0.2})
    clock.now += 10
    progress.on_step_end(0, trials)
    assert printed == []  # not yet 30 s since the last line: no result prints one
    b.status, b.last_result = "TERMINATED", {"epoch": 1, "val_acc": 0.2}
    progress.on_trial_complete(0, trials, b)
    assert printed[-1] == ("[search 10s] 1 running, 1 ended (1 stopped by ASHA, 0 failed), 4 to start | "
                           "best val_acc 0.7000 (trial aaaa) | epochs 3 | left <= 1m00s | cost $0.12"
                           "  <- trial bbbb stopped by ASHA at epoch 1")
    # left: aaaa's 2 epochs + 4 unstarted x 4 = 18 epochs at 3 epochs per 10 s
    clock.now += 30
    progress.on_step_end(0, trials)
    assert len(printed) == 2 and printed[-1].startswith("[search 40s] 1 running, 1 ended")
    a.status, a.last_result = "TERMINATED", {"epoch": 4, "val_acc": 0.9}
    progress.on_trial_complete(0, trials, a)
    assert "best val_acc 0.9000 (trial aaaa)" in printed[-1] and printed[-1].endswith("trial aaaa completed at epoch 4")
    c.status, c.last_result = "ERROR", {}
    progress.on_trial_error(0, trials, c)
    assert "3 ended (1 stopped by ASHA, 1 failed), 3 to start" in printed[-1]


def test_a_fatal_error_is_a_failure_and_never_the_best():
    printed = []
    progress = SearchProgress(metric="val_loss", num_samples=2, max_epochs=3, printer=printed.append, clock=Clock())
    progress.setup()
    bad = trial("bad", "TERMINATED")
    bad.last_result = {"fatal_error": "ConfigError: ...", "val_loss": 0.0}
    progress.on_trial_complete(0, [bad], bad)
    assert "1 failed" in printed[-1] and "best" not in printed[-1]


def test_a_trial_tune_retries_is_said_once_and_not_counted_as_ended():
    printed = []
    progress = SearchProgress(metric="val_acc", num_samples=2, max_epochs=4, printer=printed.append, clock=Clock())
    progress.setup()
    lost = trial("lost")
    progress.on_trial_result(0, [lost], lost, {"epoch": 2, "val_acc": 0.5})
    lost.num_failures = 1  # its node died: Tune restarts it from its last checkpoint
    progress.on_trial_recover(0, [lost], lost)
    assert printed[-1].endswith("<- trial lost failed at epoch 2: retried from its last checkpoint (failure 1)")
    assert "1 running, 0 ended (0 stopped by ASHA, 0 failed)" in printed[-1]


def test_durations_read_short():
    assert [duration(s) for s in (4, 250, 3725)] == ["4s", "4m10s", "1h02m"]


def test_tensorboard_hparams_lists_the_trials_metrics_and_no_tune_internals():
    import optuna
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    from search.trial_tensorboard import experiment_summary, table_metrics

    summary = experiment_summary({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                                  "head": optuna.distributions.CategoricalDistribution(["linear", "mlp"])},
                                 table_metrics("val_acc"))
    experiment = HParamsPluginData.FromString(summary.value[0].metadata.plugin_data.content).experiment
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics[0] == "best_val_acc"
    assert {"val_acc", "val_macro_f1", "val_loss", "lr", "train_loss", "epoch"} <= set(metrics)
    assert not [m for m in metrics if m.startswith("ray/") or m in ("done", "timesteps_total", "training_iteration")]
    hparams = {h.name: h for h in experiment.hparam_infos}
    assert set(hparams) == {"lr", "head", "status"}
    assert list(hparams["status"].domain_discrete.values[i].string_value for i in range(3)) == [
        "completed", "stopped_early", "failed"]  # ASHA-stopped trials are told apart from completed ones
