"""train_one_epoch / evaluate: pure functions of (model, data, state), no Ray, run on CPU in tests."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from core.errors import TrialStopped
from trainable.losses import smooth_one_hot, soft_target_loss


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf: the trial fails with this reason rather than training on garbage."""


@dataclass
class StepSettings:
    """What the step needs besides the model: precision, memory format, regularisers."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None = fp32
    channels_last: bool = False
    grad_clip: float = 0.0
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0
    class_weight: torch.Tensor | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return images.to(self.device, non_blocking=True, memory_format=fmt)


def stop_if_asked(should_stop) -> None:
    """should_stop: None, or a function saying the search has stopped this trial since its last report."""
    if should_stop is not None and should_stop():
        raise TrialStopped("the search stopped this trial")


def train_one_epoch(model, loader, optimizer, scheduler, step: StepSettings, *, epoch: int,
                    mixup=None, scaler=None, ema=None, should_stop=None, progress=None) -> dict:
    """progress: None, or a trainable.batch_progress.BatchProgress told every progress.every batches."""
    model.train()
    num_classes = model.head[-1].out_features
    weight = step.class_weight.to(step.device) if step.class_weight is not None else None
    updates = epoch * len(loader)
    # Summed on the device: a .item() per step would stall the GPU on every batch.
    total_loss, seen = torch.zeros((), device=step.device), 0
    peak_lr: dict = {}  # group name -> the highest lr a batch of this epoch trained at (warm-up rises, cosine falls)
    start = time.perf_counter()
    for batch, (images, labels) in enumerate(loader, start=1):
        stop_if_asked(should_stop)  # a stopped trial frees its GPU within a batch (Tune waits for it to end)
        images, labels = step.to_device(images), labels.to(step.device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, labels)  # soft targets, label smoothing included
        else:
            targets = smooth_one_hot(labels, num_classes, step.label_smoothing)
        with step.autocast():
            logits = model(images)
        loss = soft_target_loss(logits, targets, weight, step.focal_gamma)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if step.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip)
        for index, group in enumerate(optimizer.param_groups):
            name = group.get("name", index)
            peak_lr[name] = max(peak_lr.get(name, 0.0), group["lr"])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        updates += 1
        scheduler.step_update(num_updates=updates)
        if ema is not None:
            ema.update(getattr(model, "_orig_mod", model), step=updates)  # the uncompiled module
        total_loss += loss.detach() * labels.size(0)
        seen += labels.size(0)
        if progress is not None and progress.due(batch):
            progress.report(batch, seen, total_loss.item() / seen, time.perf_counter() - start)
    mean_loss = total_loss.item() / max(seen, 1)  # the one sync per epoch
    seconds = time.perf_counter() - start
    # Checked once per epoch, before any checkpoint of it is written: a NaN epoch never gets saved.
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(f"train loss is {mean_loss} in epoch {epoch}; lower the lr or enable grad_clip")
    return {"train_loss": mean_loss, "train_images": seen, "train_seconds": seconds,
            "train_images_per_s": seen / seconds if seconds else 0.0, "peak_lr": peak_lr}


@torch.no_grad()
def predict_logits(model, loader, step: StepSettings, should_stop=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C] float32 on CPU, labels [N]) over the whole loader, in order."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        stop_if_asked(should_stop)
        with step.autocast():
            logits = model(step.to_device(images))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())  # loader=cache's PrefetchLoader moved them to the device
    return torch.cat(all_logits), torch.cat(all_labels)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, prefix: str = "val_") -> dict:
    """loss (plain CE, comparable across trials whatever their training loss), accuracy, macro-F1, top-5."""
    num_classes = logits.shape[1]
    pred = logits.argmax(dim=1)
    metrics = {
        f"{prefix}loss": F.cross_entropy(logits, labels).item(),
        f"{prefix}acc": (pred == labels).float().mean().item(),
        f"{prefix}macro_f1": float(f1_score(labels.numpy(), pred.numpy(), labels=np.arange(num_classes),
                                            average="macro", zero_division=0)),
    }
    if num_classes > 5:
        top5 = logits.topk(5, dim=1).indices
        metrics[f"{prefix}top5_acc"] = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    return metrics


def evaluate(model, loader, step: StepSettings, should_stop=None) -> dict:
    return classification_metrics(*predict_logits(model, loader, step, should_stop))
