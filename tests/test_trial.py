"""One trial end to end on CPU: metrics, checkpoints, exact resume, and the standalone CLI."""
import json
import math

import pytest
import torch

from trainable import checkpoint
from trainable.__main__ import main as trainable_main
from trainable.loop import NonFiniteLossError
from trainable.local_sink import LocalSink
from trainable.trial import train_trial

TINY = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
        "lr": 0.01, "epochs": 3, "seed": 1}
METRICS = {"epoch", "train_loss", "val_loss", "val_acc", "val_macro_f1", "lr", "head_lr", "epoch_seconds",
           "train_images_per_s", "param_count"}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trial_reports_every_epoch_and_checkpoints(toy_data, tmp_path):
    out = tmp_path / "run"
    final = train_trial({**TINY, "data": str(toy_data)}, LocalSink(out, printer=lambda _: None))
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(METRICS <= set(r) for r in rows)
    assert "val_top5_acc" not in rows[0]  # only with more than 5 classes
    assert final == rows[-1]
    assert 0.0 <= final["val_acc"] <= 1.0 and final["param_count"] > 1e6
    latest = LocalSink(out).latest()
    assert latest.name == "epoch_0003"
    saved = checkpoint.load_model_file(latest)
    assert saved["classes"] == ["cat", "dog", "fox"]  # the class mapping travels with the weights
    assert saved["config"]["backbone"] == "resnet10t" and saved["epoch"] == 3
    state = torch.load(latest / checkpoint.TRAIN_STATE_FILE, weights_only=False)
    assert {"optimizer", "scheduler", "scaler", "rng", "epoch"} <= set(state)


@pytest.mark.parametrize("extra", [
    {},
    {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "ema": True, "ema_decay": 0.9, "augment": "trivialaugment",
     "head": "mlp", "head_hidden": 16, "drop_rate": 0.2, "class_weighting": "inverse", "focal_gamma": 2.0,
     "warmup_epochs": 1, "random_erasing": 0.3, "num_workers": 1},
    {"loader": "cache", "mixup_alpha": 0.4, "augment": "randaugment", "random_erasing": 0.3, "vflip": 0.5,
     "num_workers": 1},
], ids=["plain", "everything-on", "cache-loader"])
def test_resume_continues_exactly(toy_data, tmp_path, extra):
    config = {**TINY, **extra, "data": str(toy_data)}
    straight = tmp_path / "straight"
    train_trial(config, LocalSink(straight, printer=lambda _: None))

    interrupted = tmp_path / "interrupted"
    train_trial({**config, "epochs": 3}, LocalSink(interrupted, printer=lambda _: None, keep=3))
    # Roll back to the end of epoch 2, as if the run had been killed during epoch 3.
    import shutil
    shutil.rmtree(interrupted / "checkpoints" / "epoch_0003")
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()[:2]
    (interrupted / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    train_trial(config, LocalSink(interrupted, resume=True, printer=lambda _: None))

    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(interrupted / "metrics.jsonl")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc", "val_macro_f1", "lr"):
        assert b[2][key] == a[2][key], key


@pytest.mark.parametrize("loader", ["pil", "cache"])
def test_val_accuracy_rises_on_learnable_data(toy_data, tmp_path, loader):
    out = tmp_path / "run"
    train_trial({**TINY, "epochs": 4, "lr": 0.02, "loader": loader, "data": str(toy_data)},
                LocalSink(out, printer=lambda _: None))
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows[-1]["val_acc"] > 1 / 3 + 0.2  # well above chance (3 classes)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_nan_loss_fails_the_trial_with_its_reason(toy_data, tmp_path, monkeypatch):
    import trainable.loop
    real_loss = trainable.loop.soft_target_loss
    monkeypatch.setattr(trainable.loop, "soft_target_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"train loss is nan in epoch 0; lower the lr"):
        train_trial({**TINY, "data": str(toy_data)}, LocalSink(tmp_path / "run", printer=lambda _: None))
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing written from a broken epoch


def test_sgd_optimizer_trains(toy_data, tmp_path):
    final = train_trial({**TINY, "epochs": 1, "optimizer": "sgd", "momentum": 0.0, "data": str(toy_data)},
                        LocalSink(tmp_path / "run", printer=lambda _: None))
    assert math.isfinite(final["train_loss"])


def test_cli_runs_a_trial_and_refuses_to_overwrite(toy_data, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--data", str(toy_data), "--backbone", "resnet10t", "--epochs", "1", "--train-size", "32",
            "--eval-size", "32", "--batch-size", "8", "--num-workers", "0", "--out", str(out)]
    assert trainable_main(args) == 0
    assert json.loads((out / "config.json").read_text())["backbone"] == "resnet10t"
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    assert trainable_main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run; nothing was overwritten" in err and f"--out {out} --resume" in err
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    # resume with a higher epoch count continues from epoch 1
    assert trainable_main(["--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_cli_from_json_config_with_flag_override(toy_data, tmp_path):
    cfg = tmp_path / "trial.json"
    cfg.write_text(json.dumps({**TINY, "epochs": 1, "data": str(toy_data)}))
    out = tmp_path / "from-json"
    assert trainable_main(["--config", str(cfg), "--lr", "0.005", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["lr"] == 0.005


@pytest.mark.parametrize("args, message", [
    (["--lr", "0"], "Trial config key 'lr' has value 0.0, but must be float in (0.0, 10.0]"),
    (["--config", "missing.json"], "Config file missing.json does not exist"),
    (["--data", "/no/such/dir", "--epochs", "1"], "/no/such/dir"),
    (["--out", "/tmp/does-not-exist-xyz", "--resume"], "Nothing to resume"),
])
def test_cli_user_errors_are_one_line_messages(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert trainable_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_head_and_backbone_learning_rates(toy_data, tmp_path):
    out = tmp_path / "run"
    final = train_trial({**TINY, "epochs": 1, "lr": 1e-3, "head_lr_mult": 10.0, "scheduler": "step",
                         "decay_epochs": 100, "data": str(toy_data)}, LocalSink(out, printer=lambda _: None))
    assert final["lr"] == pytest.approx(1e-3) and final["head_lr"] == pytest.approx(1e-2)
    frozen = train_trial({**TINY, "epochs": 1, "frozen_stages": 4, "scheduler": "step", "decay_epochs": 100,
                          "data": str(toy_data)}, LocalSink(tmp_path / "frozen", printer=lambda _: None))
    assert frozen["lr"] == 0.0 and frozen["head_lr"] == pytest.approx(TINY["lr"])


def test_gpu_step_switches_reach_the_objects(toy_data):
    from core.config import TrialConfig
    from trainable.trial import make_optimizer, setup_run

    cfg = TrialConfig.from_dict({**TINY, "data": str(toy_data), "compile": True})
    run = setup_run(cfg, torch.device("cpu"))
    # compile wraps what the loops call; the module that is saved and averaged stays the plain one.
    assert isinstance(run.step_model, torch._dynamo.eval_frame.OptimizedModule)
    assert run.step_model._orig_mod is run.model
    assert not any(k.startswith("_orig_mod") for k in run.model.state_dict())
    assert run.optimizer.defaults.get("fused") in (None, False)  # fused is asked for on CUDA only
    assert make_optimizer(cfg, run.model, fused=True).defaults["fused"] is True
    plain = setup_run(TrialConfig.from_dict({**TINY, "data": str(toy_data)}), torch.device("cpu"))
    assert plain.step_model is plain.model


def checkpointed_epochs(out):
    return sorted(int(d.name.split("_")[1]) for d in (out / "checkpoints").glob("epoch_*"))


def test_resume_after_metrics_only_epochs_is_exact(toy_data, tmp_path):
    """Checkpoints every 2 epochs only: a run killed during epoch 4 resumes from epoch 2 (the latest
    checkpoint, all of which hold train state), repeats epoch 3, and matches an uninterrupted run."""
    config = {**TINY, "epochs": 4, "ema": True, "ema_decay": 0.9, "resume_state_every": 2,
              "checkpoint_new_bests": False, "data": str(toy_data)}
    straight = tmp_path / "straight"
    train_trial(config, LocalSink(straight, printer=lambda _: None, keep=10))
    assert checkpointed_epochs(straight) == [2, 4]  # epochs 1 and 3 reported metrics only

    import shutil
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)  # the same run, then killed during epoch 4, after epoch 3's row:
    shutil.rmtree(interrupted / "checkpoints" / "epoch_0004")
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()[:3]
    (interrupted / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    train_trial(config, LocalSink(interrupted, resume=True, printer=lambda _: None, keep=10))

    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(interrupted / "metrics.jsonl")
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]  # epoch 3's first row was dropped, then trained again
    for epoch in (3, 4):
        for key in ("train_loss", "val_loss", "val_acc", "val_macro_f1", "lr"):
            assert b[epoch - 1][key] == a[epoch - 1][key], (epoch, key)
    assert checkpointed_epochs(interrupted) == [2, 4]


def test_epochs_entering_the_top_keep_their_checkpoints(toy_data, tmp_path):
    from core.checkpoint_policy import checkpoint_due

    config = {**TINY, "epochs": 4, "lr": 0.02, "resume_state_every": 100, "keep_checkpoints": 1,
              "data": str(toy_data)}
    out = tmp_path / "run"
    train_trial(config, LocalSink(out, printer=lambda _: None, keep=10))
    rows = read_jsonl(out / "metrics.jsonl")
    accs = [r["val_acc"] for r in rows]
    expected = [e for e in range(1, 5) if checkpoint_due(e, rows[e - 1], accs[:e - 1], epochs=4, every=100,
                                                         keep=1, metric="val_acc")]
    assert checkpointed_epochs(out) == expected
    best = max(range(1, 5), key=lambda e: (accs[e - 1], e))  # Tune keeps the later of equal scores
    assert best in expected and 4 in expected
    for e in expected:  # every checkpoint is complete: model.pt for the ensemble, train state for a resume
        saved = checkpoint.load_model_file(out / "checkpoints" / f"epoch_{e:04d}")
        assert saved["metrics"]["val_acc"] == accs[e - 1]
        state = torch.load(out / "checkpoints" / f"epoch_{e:04d}" / checkpoint.TRAIN_STATE_FILE, weights_only=False)
        assert state["history"] == accs[:e]


def test_a_checkpoint_without_train_state_is_never_resumed(toy_data, tmp_path):
    out = tmp_path / "run"
    train_trial({**TINY, "epochs": 2, "data": str(toy_data)}, LocalSink(out, printer=lambda _: None))
    (out / "checkpoints" / "epoch_0002" / checkpoint.TRAIN_STATE_FILE).unlink()
    assert LocalSink(out).latest().name == "epoch_0001"
    from core.config import TrialConfig
    from trainable.trial import setup_run
    run = setup_run(TrialConfig.from_dict({**TINY, "data": str(toy_data)}), torch.device("cpu"))
    with pytest.raises(checkpoint.CheckpointDamaged, match="train_state.pt is missing"):
        checkpoint.restore(out / "checkpoints" / "epoch_0002", model=run.model, ema=None, optimizer=run.optimizer,
                           scheduler=run.scheduler, scaler=None, classes=run.index.classes,
                           loader_generator=run.loader_generator)


def test_the_cli_picks_the_image_size_from_the_data(toy_data, tmp_path, capsys):
    from conftest import make_image_folder
    from trainable.__main__ import sizes_from_data

    out = tmp_path / "run"  # toy_data's images are 24 px: trained at 32, not at timm's 224
    assert trainable_main(["--data", str(toy_data), "--backbone", "resnet10t", "--epochs", "1", "--batch-size", "8",
                           "--num-workers", "0", "--out", str(out)]) == 0
    assert "Image size 32 px for train_size, eval_size, from the data" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["train_size"] == saved["eval_size"] == 32
    photos = make_image_folder(tmp_path / "photos", size=100, per_class=3, val_per_class=1, test=0)
    assert sizes_from_data({"data": str(photos)}) == {"train_size": 96, "eval_size": 96}
    assert sizes_from_data({"data": str(photos), "train_size": 64}) == {"eval_size": 96}  # a given size is kept
    assert sizes_from_data({"data": str(photos), "train_size": 64, "eval_size": 80}) == {}
