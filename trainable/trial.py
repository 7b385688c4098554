"""train_trial(config, reporter): one fine-tuning run, reading top to bottom in the order it runs.

config → seed → data → model → optimisation → resume → per epoch: train, evaluate, and one call to the
reporter (core/epoch_reporter.py), which decides what is reported and which epochs checkpoint.
"""
from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass

import numpy as np
import timm.optim
import timm.scheduler
import timm.utils
import torch
from torch.utils.data import DataLoader

from core import metrics as metric_registry
from core.config import TrialConfig
from core.data import DatasetIndex, ImageListDataset, index_dataset, resolve_data_root
from core.data_fingerprint import check_fingerprint
from core.epoch_reporter import EpochReporter, Sink
from core.errors import UserError
from core.subsets import apply_subset
from trainable import checkpoint
from trainable.batch_progress import BatchProgress
from trainable.cached_pipeline import CachedImageDataset, on_device, train_image_transform
from trainable.decoded_cache import ensure_decoded
from trainable.eval_pipeline import cache_side, eval_loader
from trainable.loop import StepSettings, evaluate, train_one_epoch
from trainable.losses import class_weights
from trainable.model import build_model, count_parameters, uses_channels_last
from trainable.transforms import data_config_for, mixup_for, train_transform

@dataclass
class TrialRun:
    """Everything one trial trains with, built from its config (the benchmarks build the same)."""

    cfg: TrialConfig
    index: DatasetIndex
    model: torch.nn.Module        # saved, averaged by EMA
    step_model: torch.nn.Module   # what the loops call: `model`, or its torch.compile wrapper
    n_params: int
    data_config: dict
    loader_generator: torch.Generator
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    ema: object
    step: StepSettings
    mixup: object


def setup_run(cfg: TrialConfig, device: torch.device) -> TrialRun:
    index = index_dataset(resolve_data_root(cfg.data), val_fraction=cfg.val_fraction, seed=cfg.seed,
                          min_image_side=cfg.min_image_side)
    check_fingerprint(cfg.data_fingerprint, index, who=f"Trial on {cfg.data}",
                      fix="Restore the dataset as the plan saw it, or start a new search (the plan fingerprints "
                          "the data as it is then).")  # a DataError: not retried, the same every time
    index = apply_subset(index, cfg.subset, cfg.subset_seed)  # a refit's fold or bag; unchanged by default
    num_classes = len(index.classes)
    model = build_model(cfg, num_classes)
    data_config = data_config_for(model.backbone)
    loader_generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, val_loader = make_loaders(cfg, index, data_config, loader_generator, device)

    channels_last = device.type == "cuda" and uses_channels_last(cfg)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    amp_dtype = pick_amp_dtype(cfg, device)
    optimizer = make_optimizer(cfg, model, fused=cfg.fused_optimizer and device.type == "cuda")
    with warnings.catch_warnings():
        # timm warns that a plateau scheduler's counters are lost on resume; trainable/scheduler_state.py keeps them.
        warnings.filterwarnings("ignore", message="PlateauLRScheduler is deprecated", category=FutureWarning)
        scheduler, _ = timm.scheduler.create_scheduler_v2(
            optimizer, sched=cfg.scheduler, num_epochs=cfg.epochs, decay_epochs=cfg.decay_epochs,
            decay_rate=cfg.decay_rate, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
            patience_epochs=cfg.patience_epochs, plateau_mode=metric_registry.direction(cfg.metric),
            step_on_epochs=cfg.scheduler != "cosine", updates_per_epoch=len(train_loader),
        )
    step = StepSettings(
        device=device, amp_dtype=amp_dtype, channels_last=channels_last, grad_clip=cfg.grad_clip,
        label_smoothing=cfg.label_smoothing, focal_gamma=cfg.focal_gamma,
        class_weight=class_weights(index.class_counts(), cfg.class_weighting, cfg.class_weight_beta),
    )
    return TrialRun(
        cfg=cfg, index=index, model=model, step_model=torch.compile(model) if cfg.compile else model,
        n_params=count_parameters(model), data_config=data_config, loader_generator=loader_generator,
        train_loader=train_loader, val_loader=val_loader, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        ema=timm.utils.ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None,
        step=step, mixup=mixup_for(cfg, num_classes),
    )


def train_trial(config: dict, sink: Sink) -> dict:
    """Run (or resume) one trial, reporting to `sink`; returns the last epoch's metrics."""
    cfg = TrialConfig.from_dict(config)
    seed_everything(cfg.seed)
    run = setup_run(cfg, pick_device())
    # history: the trial's metric at every finished epoch. A damaged newest checkpoint falls back to an older
    # one; none readable means a fresh start (both with a warning).
    start_epoch, history = checkpoint.restore_latest_good(
        sink.checkpoints_to_resume(), sink.warn, model=run.model, ema=run.ema, optimizer=run.optimizer,
        scheduler=run.scheduler, scaler=run.scaler, classes=run.index.classes, loader_generator=run.loader_generator)
    reporter = EpochReporter(sink, cfg, history)
    metrics = {}
    for epoch in range(start_epoch, cfg.epochs):
        progress = BatchProgress(cfg.log_every_batches, epoch=epoch, epochs=cfg.epochs,
                                 batches=len(run.train_loader), printer=sink.progress)
        metrics = run_epoch(run, epoch, should_stop=reporter.stopped, progress=progress)
        reporter.end_of_epoch(metrics, save=lambda folder: checkpoint.save(
            folder, model=run.model, ema=run.ema, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
            epoch=metrics["epoch"], classes=run.index.classes, config=cfg.to_dict(), data_config=run.data_config,
            metrics=metrics, loader_generator=run.loader_generator, history=reporter.history))
    return metrics


def run_epoch(run: TrialRun, epoch: int, should_stop=None, progress=None) -> dict:
    """Train one epoch, evaluate, step the epoch-wise lr schedule on the trial's metric; the epoch's metrics.
    should_stop() is asked between batches (a trial the search stopped frees its device within a batch).
    `lr` / `head_lr` are the highest rates the epoch's batches trained at: read after the schedule's step they
    would be the next epoch's (a 1-epoch cosine trial reported min_lr, as if it had trained at 1e-6)."""
    started = time.perf_counter()
    train = train_one_epoch(run.step_model, run.train_loader, run.optimizer, run.scheduler, run.step, epoch=epoch,
                            mixup=run.mixup, scaler=run.scaler, ema=run.ema, should_stop=should_stop,
                            progress=progress)
    val = evaluate(run.ema.module if run.ema is not None else run.step_model, run.val_loader, run.step, should_stop)
    run.scheduler.step(epoch + 1, metric=val[run.cfg.metric])  # plateau: in the metric's direction (setup_run)
    return {
        "epoch": epoch + 1, "train_loss": train["train_loss"], **val,
        "lr": train["peak_lr"].get("backbone", 0.0), "head_lr": train["peak_lr"].get("head", 0.0),
        "epoch_seconds": time.perf_counter() - started, "train_images_per_s": train["train_images_per_s"],
        "param_count": run.n_params, "device": run.step.device.type, "peak_gpu_mem_gb": peak_gpu_mem_gb(run.step.device),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    # Under Ray, CUDA_VISIBLE_DEVICES already restricts this process to the GPUs the trial was given.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_gpu_mem_gb(device: torch.device) -> float:
    """Peak memory this process's tensors took on the GPU so far (what fractional GPUs must fit); 0 on CPU."""
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0


def pick_amp_dtype(cfg: TrialConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or not cfg.amp:
        return None  # CPU: plain fp32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_loaders(cfg: TrialConfig, index: DatasetIndex, data_config: dict, generator: torch.Generator,
                 device: torch.device) -> tuple:
    """Train and val loaders; for loader=cache wrapped in timm's PrefetchLoader, which finishes the uint8
    batches on the device."""
    if len(index.train) < cfg.batch_size:
        raise UserError(
            f"batch_size is {cfg.batch_size}, but {index.root} has only {len(index.train)} training images; "
            f"set batch_size <= {len(index.train)}."
        )
    common = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda",
              "persistent_workers": False}
    # drop_last: mixup needs even batches, and a batch of one breaks BatchNorm.
    train_options = {"batch_size": cfg.batch_size, "shuffle": True, "drop_last": True, "generator": generator, **common}
    # val goes through the config's eval pipeline, the one the ensemble scores this trial's checkpoints with.
    if cfg.loader == "pil":
        return (DataLoader(ImageListDataset(index.train, train_transform(cfg, data_config)), **train_options),
                eval_loader(cfg, index.val, data_config, device))
    decoded = ensure_decoded([p for p, _ in index.train + index.val], cache_side(cfg), workers=max(cfg.num_workers, 1))
    train = DataLoader(CachedImageDataset(decoded, index.train, train_image_transform(cfg, data_config)), **train_options)
    return (on_device(train, data_config, device, random_erasing=cfg.random_erasing),
            eval_loader(cfg, index.val, data_config, device, decoded=decoded))


def current_lr(optimizer, part: str) -> float:
    """The scheduled lr of the backbone or head groups (0.0 for a fully frozen backbone)."""
    return next((g["lr"] for g in optimizer.param_groups if g.get("name") == part), 0.0)


def make_optimizer(cfg: TrialConfig, model, *, fused: bool = False) -> torch.optim.Optimizer:
    """Four groups: backbone/head x decay/no-decay. Norms and biases (ndim <= 1) get no weight decay."""
    groups = []
    for name, part, lr in (("backbone", model.backbone, cfg.lr), ("head", model.head, cfg.lr * cfg.head_lr_mult)):
        params = [p for p in part.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay, "name": name},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name}]
    groups = [g for g in groups if g["params"]]
    # timm's "sgd" is Nesterov SGD; "momentum" is plain torch SGD, which is what sgd means here.
    opt = {"sgd": "momentum"}.get(cfg.optimizer, cfg.optimizer)
    # fused: one kernel for every parameter on CUDA; otherwise torch picks foreach (also batched).
    extra = {"fused": True} if fused else {}
    return timm.optim.create_optimizer_v2(groups, opt=opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          momentum=cfg.momentum, **extra)
