"""Which epochs report a checkpoint, and that Tune resumes exactly from the latest one (core/checkpoint_policy.py)."""
import json
from pathlib import Path

import pytest

from conftest import fit_with_one_retry, reported_rows
from core.checkpoint_policy import checkpoint_due, enters_top
from core.config import ConfigError, TrialConfig


@pytest.mark.parametrize("history, value, keep, metric, expected", [
    ([], 0.1, 2, "val_acc", True),                     # nothing to beat yet
    ([0.5], 0.1, 2, "val_acc", True),                  # fewer than keep so far
    ([0.5, 0.6], 0.4, 2, "val_acc", False),
    ([0.5, 0.6], 0.55, 2, "val_acc", True),            # beats the 2nd best
    ([0.5, 0.6], 0.5, 2, "val_acc", True),             # a tie: Tune keeps the later of equal scores
    ([0.5, 0.6, 0.7], 0.65, 1, "val_acc", False),
    ([1.0, 0.8], 0.9, 2, "val_loss", True),            # lower is better
    ([1.0, 0.8], 1.1, 2, "val_loss", False),
])
def test_enters_top(history, value, keep, metric, expected):
    assert enters_top(history, value, keep, metric) is expected


def due_epochs(accs, *, every, keep=2, epochs=None, new_bests=True):
    epochs = epochs or len(accs)
    return [e for e in range(1, len(accs) + 1)
            if checkpoint_due(e, {"val_acc": accs[e - 1]}, accs[:e - 1], epochs=epochs, every=every, keep=keep,
                              metric="val_acc", new_bests=new_bests)]


def test_cadence_last_epoch_and_new_bests():
    falling = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    assert due_epochs(falling, every=3) == [1, 2, 3, 6, 7]         # top 2, every 3rd, the last
    assert due_epochs(falling, every=3, new_bests=False) == [3, 6, 7]
    assert due_epochs(falling, every=1) == [1, 2, 3, 4, 5, 6, 7]   # every epoch: the old behaviour
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert due_epochs(rising, every=100) == [1, 2, 3, 4, 5]        # every epoch is a new best
    # A trial ASHA stops at its 3rd epoch (not its last) still holds its best epoch's checkpoint.
    assert due_epochs([0.5, 0.4, 0.3], every=100, epochs=30) == [1, 2]


def test_a_metric_the_trial_does_not_report_checkpoints_every_epoch():
    # val_top5_acc is absent with 5 classes or fewer: never drop a checkpoint that cannot be ranked.
    assert checkpoint_due(1, {"val_acc": 0.1}, [], epochs=5, every=3, keep=1, metric="val_top5_acc")
    assert checkpoint_due(2, {"val_acc": 0.1}, [0.2], epochs=5, every=3, keep=1, metric="val_top5_acc")


@pytest.mark.parametrize("key, value, message", [
    ("resume_state_every", 0, "'resume_state_every' has value 0, but must be int in [1, 10000]"),
    ("keep_checkpoints", 0, "'keep_checkpoints' has value 0, but must be int in [1, 1000]"),
    ("metric", "acc", "'metric' has value 'acc', but must be one of"),
])
def test_bad_checkpoint_keys_are_one_clear_message(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrialConfig.from_dict({key: value})


def test_tune_resumes_a_failed_trial_from_its_latest_checkpoint_exactly(toy_data, tmp_path, ray_session):
    """Under Tune, with checkpoints at epochs 2 and 4 only: a trial that fails after reporting epoch 3
    (metrics only) is retried from epoch 2's checkpoint, repeats epoch 3, and its epochs 3 and 4 equal
    those of the same config that never failed. Tune's kept checkpoints all hold model.pt + train state."""
    from ray import tune

    from worker.tune_sink import TuneSink
    from trainable import checkpoint
    from trainable.trial import train_trial

    marker = tmp_path / "failed-once"
    trained = tmp_path / "trained"  # what each trial reported, in order, as the trial saw it

    def flaky_trial(config):
        fail_at = config["fail_at"]
        config = {k: v for k, v in config.items() if k != "fail_at"}

        class FailingOnce(TuneSink):
            def send(self, metrics, checkpoint_dir):
                super().send(metrics, checkpoint_dir)
                with open(trained / f"{fail_at}.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if metrics["epoch"] == fail_at and not marker.exists():
                    marker.touch()
                    raise RuntimeError("node lost")

        train_trial(config, FailingOnce())

    trained.mkdir()
    config = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
              "lr": 0.01, "epochs": 4, "seed": 1, "resume_state_every": 2, "checkpoint_new_bests": False,
              "keep_checkpoints": 1, "data": str(toy_data), "fail_at": tune.grid_search([0, 3])}
    results = {r.config["fail_at"]: r for r in fit_with_one_retry(flaky_trial, config, tmp_path / "runs", "flaky")}
    assert marker.exists()

    rows = lambda name: [json.loads(line) for line in (trained / name).read_text().splitlines()]
    clean, retried = rows("0.jsonl"), rows("3.jsonl")
    assert [r["epoch"] for r in clean] == [1, 2, 3, 4]
    assert [r["epoch"] for r in retried] == [1, 2, 3, 3, 4]  # epoch 3 trained again, from epoch 2's checkpoint
    for got, want in ((retried[3], clean[2]), (retried[4], clean[3])):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert got[key] == want[key], (got["epoch"], key)
    # What Tune recorded ends with the retried run's epoch 4. (Its log of the failed attempt's last result is
    # not reliable: a fresh-clone CI run once had one row of epoch 3, not two.)
    tune_rows = reported_rows(results[3])
    assert [r["epoch"] for r in tune_rows][-2:] == [3, 4] and tune_rows[-1]["val_loss"] == retried[4]["val_loss"]
    assert tune_rows[-1]["training_iteration"] == 4                      # Tune rewound to the checkpoint
    for result in results.values():
        for ckpt, metrics in result.best_checkpoints:
            with ckpt.as_directory() as d:
                names = {p.name for p in Path(d).iterdir()}
            assert {checkpoint.MODEL_FILE, checkpoint.TRAIN_STATE_FILE} <= names and metrics["epoch"] in (2, 4)


def test_tune_falls_back_past_a_damaged_latest_checkpoint(toy_data, tmp_path, ray_session):
    """Under Tune, a retried trial whose latest checkpoint in storage is damaged (truncated model.pt) resumes
    from the previous checkpoint Tune kept: epoch 2 is trained again, exactly as it first ran."""
    from worker.tune_sink import TuneSink
    from trainable import checkpoint
    from trainable.trial import train_trial

    marker, storage = tmp_path / "damaged-once", tmp_path / "runs"

    def damaging_trial(config):
        class DamagingOnce(TuneSink):
            def send(self, metrics, checkpoint_dir):
                if metrics["epoch"] == 3 and not marker.exists():  # epoch 2's checkpoint is Tune's latest
                    marker.touch()
                    latest = max(storage.glob("damaged/*/checkpoint_*")) / checkpoint.MODEL_FILE
                    latest.write_bytes(latest.read_bytes()[:1000])
                    raise RuntimeError("node lost")
                super().send(metrics, checkpoint_dir)

        train_trial(config, DamagingOnce())

    config = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
              "lr": 0.01, "epochs": 3, "seed": 1, "resume_state_every": 1, "data": str(toy_data)}
    [result] = fit_with_one_retry(damaging_trial, config, storage, "damaged", keep=2)
    assert marker.exists()
    rows = reported_rows(result)
    assert [r["epoch"] for r in rows] == [1, 2, 2, 3]  # resumed after epoch 1, not after the damaged epoch 2
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        assert rows[2][key] == rows[1][key], key
