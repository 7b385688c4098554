"""The CUDA path, on a real GPU: `pytest -m gpu` (skipped without CUDA). Small and fast, each asserting values.

Run on a GPU node by benchmarks/tools/gpu_suite.py (which records the outcome in its JSON), or alone:
    python -m pytest -m gpu -q tests/test_gpu.py
"""
import json
import math
import shutil

import pandas as pd
import pytest
import torch

from conftest import make_image_folder
from trainable.cached_pipeline import on_device
from core.config import TrialConfig
from trainable.loop import train_one_epoch
from trainable.local_sink import LocalSink
from trainable.trial import setup_run, train_trial

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
TINY = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 8, "num_workers": 0,
        "lr": 0.003, "seed": 0, "epochs": 3}


@pytest.fixture(autouse=True)
def _restore_cudnn_benchmark():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


def fixed_batch_losses(run, steps: int = 8) -> list[float]:
    """The train loss of one batch over `steps` updates on it: each a one-batch epoch of the trial's own loop.
    Eight, not fewer: fp16's GradScaler may skip its first steps while it finds its scale."""
    images, labels = next(iter(run.train_loader))
    return [train_one_epoch(run.step_model, [(images, labels)], run.optimizer, run.scheduler, run.step, epoch=i,
                            scaler=run.scaler)["train_loss"] for i in range(steps)]


def spatial_conv_weight(model) -> torch.Tensor:
    # A k x k conv with more than one input channel: its channels_last strides differ from NCHW ones.
    return next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1)


# (config changes, expected: autocast dtype, GradScaler, channels_last, fused optimizer, cudnn.benchmark, compiled)
STEP_SETTINGS = {
    "bf16": ({}, (torch.bfloat16, False, True, True, True, False)),
    "fp16-gradscaler": ({}, (torch.float16, True, True, True, True, False)),  # as on a GPU without bf16
    "fp32": ({"amp": False}, (None, False, True, True, True, False)),
    "channels_last-off": ({"channels_last": False}, (torch.bfloat16, False, False, True, True, False)),
    "resnest-nchw": ({"backbone": "resnest14d"}, (torch.bfloat16, False, False, True, True, False)),
    "foreach-adamw": ({"fused_optimizer": False}, (torch.bfloat16, False, True, False, True, False)),
    "cudnn-benchmark-off": ({"cudnn_benchmark": False}, (torch.bfloat16, False, True, True, False, False)),
    "compile": ({"compile": True}, (torch.bfloat16, False, True, True, True, True)),
    "cache-loader": ({"loader": "cache"}, (torch.bfloat16, False, True, True, True, False)),
}


@pytest.mark.parametrize("name", STEP_SETTINGS)
def test_each_step_setting_trains_on_the_gpu(name, toy_data, monkeypatch):
    changes, (amp_dtype, scaled, channels_last, fused, benchmark, compiled) = STEP_SETTINGS[name]
    if name == "fp16-gradscaler":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    run = setup_run(TrialConfig.from_dict({**TINY, **changes, "data": str(toy_data)}), CUDA)

    losses = fixed_batch_losses(run)
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses

    assert run.step.amp_dtype == amp_dtype
    assert isinstance(run.scaler, torch.amp.GradScaler) if scaled else run.scaler is None
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in run.model.parameters())  # fp32 masters
    assert spatial_conv_weight(run.model).is_contiguous(memory_format=torch.channels_last) == channels_last
    assert bool(run.optimizer.defaults.get("fused")) == fused
    assert torch.backends.cudnn.benchmark == benchmark
    assert isinstance(run.step_model, torch._dynamo.eval_frame.OptimizedModule) == compiled
    images, _ = next(iter(run.train_loader))
    with run.step.autocast():
        logits = run.step_model(run.step.to_device(images))
    assert logits.device.type == "cuda" and logits.dtype == (amp_dtype or torch.float32)


def test_cache_loader_finishes_batches_on_cuda_as_on_cpu(toy_data):
    cfg = TrialConfig.from_dict({**TINY, "data": str(toy_data), "loader": "cache"})
    run = setup_run(cfg, CUDA)
    raw = next(iter(run.train_loader.loader))  # PrefetchLoader.loader: the uint8 DataLoader
    assert raw[0].dtype == torch.uint8
    on_gpu = next(iter(on_device([raw], run.data_config, CUDA)))
    on_cpu = next(iter(on_device([raw], run.data_config, torch.device("cpu"))))
    assert on_gpu[0].device.type == "cuda" and on_gpu[0].dtype == torch.float32
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(on_gpu[1].cpu(), on_cpu[1])
    # Eval batches are deterministic: the trial's CUDA val loader delivers what its CPU one does.
    cpu_run = setup_run(cfg, torch.device("cpu"))
    for (a, la), (b, lb) in zip(run.val_loader, cpu_run.val_loader):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)
        assert torch.equal(la.cpu(), lb)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# cuDNN may pick other kernels in the resumed process (cudnn.benchmark), so the GPU resume is close, not
# bit-exact as on CPU: losses within 5 % relative, accuracy within one val image in 12, the lr exact.
LOSS_RTOL, ACC_ATOL = 0.05, 1 / 12 + 1e-6


def test_resume_on_cuda_continues_from_the_checkpoint(toy_data, tmp_path):
    config = {**TINY, "data": str(toy_data)}
    straight = tmp_path / "straight"
    train_trial(config, LocalSink(straight, printer=lambda _: None))
    interrupted = tmp_path / "interrupted"
    train_trial(config, LocalSink(interrupted, printer=lambda _: None, keep=3))
    # Roll back to the end of epoch 2, as if the run had been killed during epoch 3.
    shutil.rmtree(interrupted / "checkpoints" / "epoch_0003")
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()[:2]
    (interrupted / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    resumed = train_trial(config, LocalSink(interrupted, resume=True, printer=lambda _: None))

    a, b = read_jsonl(straight / "metrics.jsonl"), read_jsonl(interrupted / "metrics.jsonl")
    assert [r["epoch"] for r in b] == [1, 2, 3] and resumed["epoch"] == 3
    assert b[2]["device"] == "cuda" and b[2]["peak_gpu_mem_gb"] > 0
    assert b[2]["lr"] == a[2]["lr"]
    for key in ("train_loss", "val_loss"):
        assert b[2][key] == pytest.approx(a[2][key], rel=LOSS_RTOL), key
    assert abs(b[2]["val_acc"] - a[2]["val_acc"]) <= ACC_ATOL


SHARED_GPU_SPACE = '''
SETTINGS = {
    "num_samples": 2, "max_epochs": 2, "grace_period": 2, "cpus_per_trial": 1, "gpus_per_trial": 0.5,
    "max_concurrent": 2, "train_size": 32, "eval_size": 32, "max_failures": 0,
    "trial": {"num_workers": 0, "backbone": "resnet10t", "batch_size": 8},
}

def define(trial):
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
'''


def test_two_trials_share_one_gpu_through_ray(ray_session, tmp_path):
    from search.run import main as search_main

    data = make_image_folder(tmp_path / "data")
    space = tmp_path / "space.py"
    space.write_text(SHARED_GPU_SPACE)
    assert search_main(["--space", str(space), "--data", str(data), "--storage", str(tmp_path / "results"),
                        "--name", "shared", "--seed", "0"]) == 0
    run_dir = tmp_path / "results" / "shared"
    board = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "completed").all()

    last = [read_jsonl(p)[-1] for p in run_dir.glob("*/result.json")]
    assert len(last) == 2
    total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    for row in last:
        assert row["device"] == "cuda" and row["epoch"] == 2
        assert 0 < row["peak_gpu_mem_gb"] < total_gb / 2  # the recorded peak: what a half GPU must hold
    # Both held the GPU at the same time: their running intervals overlap.
    spans = sorted((r["timestamp"] - r["time_total_s"], r["timestamp"]) for r in last)
    assert spans[1][0] < spans[0][1], spans


def build_ensemble_recording_devices(run_dir) -> tuple[dict, set]:
    """The ensemble's public entry, and the device each member was scored on (ensemble.json records it)."""
    from ensemble.build import build_ensemble

    manifest = build_ensemble(run_dir, say=lambda _: None)
    return manifest, {m["scored_on"]["device"] for m in manifest["scores"]["members"]}


def test_ensemble_scores_members_on_the_gpu(toy_data, tmp_path):
    rows = []
    for rank, (trial_id, seed) in enumerate((("gpu111", 1), ("gpu222", 2)), start=1):
        train_trial({**TINY, "epochs": 2, "seed": seed, "data": str(toy_data)},
                    LocalSink(tmp_path / trial_id, printer=lambda _: None))
        rows.append({"rank": rank, "trial_id": trial_id, "status": "completed", "reason": "", "epochs": 2,
                     "best_val_acc": 0.5, "param_count": 4_900_000,
                     "best_checkpoint": str(LocalSink(tmp_path / trial_id).latest())})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pd.DataFrame(rows).to_csv(run_dir / "leaderboard.csv", index=False)

    manifest, devices = build_ensemble_recording_devices(run_dir)
    assert devices == {"cuda"}
    assert manifest["members"] and (run_dir / "prediction.csv").exists()
