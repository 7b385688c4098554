"""Train images/s: the trial's pipeline against a plain reference loop, side by side in one run.

Reference: torchvision ImageFolder + PIL transforms (RandomResizedCrop, flip, ToTensor, Normalize)
+ CrossEntropyLoss + AdamW, fp32 — what the seed reports ran. Trial: trainable's dataset, timm
transforms, soft-target loss, timm optimizer and scheduler, and (on CUDA) AMP + channels_last.
Same model, batch size, image size and workers. Runs alternate (ref, trial, ref, trial, ...) so that
machine noise hits both; the ratio of medians is the figure to quote.

    python benchmarks/trial_vs_reference.py --data ../shared/datasets/tiny100 --backbone resnet18 --size 64
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time

import timm.scheduler
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from trainable.config import TrialConfig
from trainable.data import index_dataset, resolve_data_root
from trainable.loop import StepSettings, train_one_epoch
from trainable.losses import class_weights
from trainable.model import build_model, uses_channels_last
from trainable.transforms import data_config_for
from trainable.trial import make_loaders, make_optimizer, pick_amp_dtype, pick_device


class Limited:
    """The first `batches` batches of a loader, with a len() the scheduler can use."""

    def __init__(self, loader, batches):
        self.loader, self.batches = loader, batches

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.batches)

    def __len__(self):
        return self.batches


def reference_images_per_s(args, device) -> float:
    model = build_model(TrialConfig(backbone=args.backbone), args.num_classes).to(device)
    cfg = data_config_for(model.backbone)
    transform = T.Compose([T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(cfg["mean"], cfg["std"])])
    loader = DataLoader(datasets.ImageFolder(f"{args.data}/train", transform), batch_size=args.batch_size,
                        shuffle=True, num_workers=args.workers, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for i, (images, labels) in enumerate(itertools.islice(loader, args.batches + args.warmup)):
        if i == args.warmup:
            _sync(device)
            start, seen = time.perf_counter(), 0
        images, labels = images.to(device), labels.to(device)
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += labels.size(0)
    _sync(device)
    return seen / (time.perf_counter() - start)


def trial_images_per_s(args, device) -> float:
    cfg = TrialConfig(backbone=args.backbone, train_size=args.size, eval_size=args.size,
                      batch_size=args.batch_size, num_workers=args.workers, data=args.data)
    index = index_dataset(resolve_data_root(args.data), warn=lambda _: None)
    model = build_model(cfg, len(index.classes))
    channels_last = device.type == "cuda" and uses_channels_last(cfg)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    train_loader, _ = make_loaders(cfg, index, data_config_for(model.backbone), torch.Generator().manual_seed(0), device)
    amp = pick_amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    optimizer = make_optimizer(cfg, model)
    loader = Limited(train_loader, args.warmup)
    scheduler, _ = timm.scheduler.create_scheduler_v2(optimizer, num_epochs=2, step_on_epochs=False,
                                                      updates_per_epoch=args.batches)
    step = StepSettings(device=device, amp_dtype=amp, channels_last=channels_last,
                        class_weight=class_weights(index.class_counts(), cfg.class_weighting))
    train_one_epoch(model, loader, optimizer, scheduler, step, epoch=0, scaler=scaler)  # warm-up batches
    result = train_one_epoch(model, Limited(train_loader, args.batches), optimizer, scheduler, step, epoch=1,
                             scaler=scaler)
    return result["train_images_per_s"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=30, help="timed batches per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    args.num_classes = len(index_dataset(resolve_data_root(args.data), warn=lambda _: None).classes)
    device = pick_device()
    torch.manual_seed(0)
    ref, trial = [], []
    for _ in range(args.repeats):
        ref.append(reference_images_per_s(args, device))
        trial.append(trial_images_per_s(args, device))
        print(f"reference {ref[-1]:.1f} img/s   trial {trial[-1]:.1f} img/s", flush=True)
    summary = {
        "backbone": args.backbone, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": torch.get_num_threads(), "reference_img_s": statistics.median(ref),
        "trial_img_s": statistics.median(trial), "ratio": statistics.median(trial) / statistics.median(ref),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
