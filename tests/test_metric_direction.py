"""The search metric's direction (core/metrics.py) drives everything that ranks: with metric val_loss the plateau
lr scheduler decays when val_loss stops falling, checkpoints are ranked lower-is-better, and so is the leaderboard."""
import math

import pytest

from core import metrics
from core.config import TrialConfig
from core.epoch_reporter import Sink


def test_the_registry_knows_each_metric_direction():
    assert metrics.direction("val_loss") == "min" and metrics.direction("val_acc") == "max"
    assert metrics.is_better("val_loss", 0.5, 0.6) and not metrics.is_better("val_acc", 0.5, 0.6)
    assert metrics.best_index("val_loss", [0.9, 0.4, math.nan, 0.4, 0.7]) == 1
    assert metrics.best_index("val_acc", [0.1, math.nan, 0.3, 0.3]) == 2
    assert metrics.best_index("val_acc", [math.nan]) is None


def toy_config(data, **overrides) -> TrialConfig:
    return TrialConfig.from_dict({"data": str(data), "backbone": "resnet10t", "train_size": 16, "eval_size": 16,
                                  "batch_size": 8, "num_workers": 0, "scheduler": "plateau", "patience_epochs": 0,
                                  "decay_rate": 0.5, "min_lr": 0.0, "lr": 0.02, **overrides})


def test_the_plateau_scheduler_is_built_in_the_metric_direction(toy_data):
    import torch

    from trainable.trial import current_lr, setup_run

    run = setup_run(toy_config(toy_data, metric="val_loss", epochs=5), torch.device("cpu"))
    assert run.scheduler.lr_scheduler.mode == "min"
    lr0 = current_lr(run.optimizer, "backbone")
    run.scheduler.step(1, metric=1.0)
    run.scheduler.step(2, metric=0.8)   # lower loss: an improvement, no decay
    assert current_lr(run.optimizer, "backbone") == pytest.approx(lr0)
    run.scheduler.step(3, metric=0.9)   # higher loss: no improvement, patience 0 -> decay
    assert current_lr(run.optimizer, "backbone") == pytest.approx(lr0 * 0.5)
    assert setup_run(toy_config(toy_data, metric="val_acc"), torch.device("cpu")).scheduler.lr_scheduler.mode == "max"


class Recording(Sink):
    def __init__(self):
        self.rows = []

    def send(self, metrics: dict, checkpoint_dir):
        self.rows.append(metrics)


def test_a_val_loss_trial_decays_its_lr_exactly_when_val_loss_stops_falling(toy_data):
    from trainable.trial import train_trial

    sink = Recording()
    train_trial(toy_config(toy_data, metric="val_loss", epochs=6).to_dict(), sink)
    losses, lrs = [r["val_loss"] for r in sink.rows], [r["lr"] for r in sink.rows]
    best = losses[0]
    decays = 0
    for epoch in range(1, len(losses) - 1):  # lrs[e]: the lr epoch e trained at, set by epoch e-1's step
        improved = losses[epoch] < best * (1 - 1e-4)  # torch's ReduceLROnPlateau, threshold_mode "rel"
        assert (lrs[epoch + 1] < lrs[epoch]) == (not improved), (epoch, losses, lrs)
        decays += not improved
        best = min(best, losses[epoch])
    assert 0 < decays < len(losses) - 1, (losses, lrs)  # both cases happened: the test says something


def test_local_checkpoints_keep_the_lowest_val_loss(tmp_path):
    from trainable.local_sink import LocalSink

    sink = LocalSink(tmp_path / "run", keep=1, printer=lambda _: None, config={"metric": "val_loss"})
    for epoch, loss in enumerate([0.9, 0.3, 0.5, 0.7], start=1):
        folder = tmp_path / f"ckpt{epoch}"
        folder.mkdir()
        sink.send({"epoch": epoch, "val_loss": loss, "lr": 0.1, "epoch_seconds": 1.0, "train_images_per_s": 1.0},
                  folder)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["epoch_0002", "epoch_0004"]  # the best (lowest) and the latest
