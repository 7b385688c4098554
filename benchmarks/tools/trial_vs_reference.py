"""Train images/s: the trial's pipeline against a plain reference loop, side by side in one run.

Reference: torchvision ImageFolder + PIL transforms (RandomResizedCrop, flip, ToTensor, Normalize)
+ CrossEntropyLoss + AdamW, fp32 — what the seed reports ran. Trial: trainable's dataset, timm
transforms, soft-target loss, timm optimizer and scheduler, and (on CUDA) bf16 + channels_last + fused
optimizer + cudnn.benchmark, built by the trial's own setup_run — once per loader ('pil', 'cache').
Same model, batch size, image size and workers. Runs alternate (ref, trial, ref, trial, ...) so that
machine noise hits both; the ratio of medians is the figure to quote.
--synthetic feeds both the same random batch instead (no decode): the GPU step alone.

    python -m benchmarks.tools.trial_vs_reference --data ../shared/datasets/tiny100 --backbone resnet18 --size 64
    # GPU: python -m benchmarks.tools.trial_vs_reference --data DATA --backbone resnet50 --size 224 --batch-size 256 \
    #        --workers 14 --batches 50   (then once per --no-* switch, and with --compile)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from benchmarks.record import write_record
from core.config import TrialConfig
from core.data import index_dataset, resolve_data_root
from trainable.loop import train_one_epoch
from trainable.model import build_model
from trainable.transforms import data_config_for
from trainable.trial import pick_device, setup_run


class Limited:
    """`batches` batches of a loader, with a len() the scheduler can use; cycles when the folder holds fewer."""

    def __init__(self, loader, batches):
        self.loader, self.batches = loader, batches

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.loader)), self.batches)

    def __len__(self):
        return self.batches


class SyntheticBatches:
    """One random, normalised batch served `batches` times from (pinned) host memory: the step without decode."""

    def __init__(self, args, device, batches: int):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(args.batch_size, 3, args.size, args.size, generator=generator)
        self.labels = torch.randint(args.num_classes, (args.batch_size,), generator=generator)
        if device.type == "cuda":
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        self.batches = batches

    def __iter__(self):
        return iter([(self.images, self.labels)] * self.batches)

    def __len__(self):
        return self.batches


def reference_images_per_s(args, device) -> float:
    model = build_model(TrialConfig(backbone=args.backbone), args.num_classes).to(device)
    cfg = data_config_for(model.backbone)
    transform = T.Compose([T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(cfg["mean"], cfg["std"])])
    if args.synthetic:
        loader = SyntheticBatches(args, device, args.batches + args.warmup)
    else:
        loader = DataLoader(datasets.ImageFolder(f"{args.data}/train", transform), batch_size=args.batch_size,
                            shuffle=True, num_workers=args.workers, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for i, (images, labels) in enumerate(Limited(loader, args.batches + args.warmup)):
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


def trial_config(args, loader: str) -> TrialConfig:
    return TrialConfig(backbone=args.backbone, train_size=args.size, eval_size=args.size, batch_size=args.batch_size,
                       num_workers=args.workers, data=args.data, loader=loader, amp=not args.no_amp,
                       channels_last=not args.no_channels_last, fused_optimizer=not args.no_fused,
                       cudnn_benchmark=not args.no_cudnn_benchmark, compile=args.compile)


def trial_images_per_s(args, device, loader: str) -> float:
    """The trial's own objects (trainable.trial.setup_run), timed over `args.batches` batches."""
    run = setup_run(trial_config(args, "pil" if args.synthetic else loader), device)
    batches = SyntheticBatches(args, device, max(args.warmup, args.batches)) if args.synthetic else run.train_loader
    warm = train_one_epoch(run.step_model, Limited(batches, args.warmup), run.optimizer, run.scheduler,
                           run.step, epoch=0, scaler=run.scaler)  # untimed: worker start, cudnn autotune, compile
    del warm
    result = train_one_epoch(run.step_model, Limited(batches, args.batches), run.optimizer, run.scheduler,
                             run.step, epoch=1, scaler=run.scaler)
    return result["train_images_per_s"]


def add_num_classes(args):
    args.num_classes = len(index_dataset(resolve_data_root(args.data), warn=lambda _: None).classes)
    return args


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=30, help="timed batches per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loaders", nargs="+", default=["pil", "cache"], choices=["pil", "cache"])
    # Each GPU-step switch can be turned off alone to measure what it buys (they do nothing on CPU).
    p.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-fused", action="store_true", help="foreach instead of the fused optimizer")
    p.add_argument("--no-cudnn-benchmark", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--synthetic", action="store_true", help="one random batch, no decode: the step alone")
    return p


def main():
    args = add_num_classes(build_parser().parse_args())
    device = pick_device()
    torch.manual_seed(0)
    runs = {"reference": [], **{f"trial_{loader}": [] for loader in args.loaders}}
    for _ in range(args.repeats):
        runs["reference"].append(reference_images_per_s(args, device))
        for loader in args.loaders:
            runs[f"trial_{loader}"].append(trial_images_per_s(args, device, loader))
        print({k: round(v[-1], 1) for k, v in runs.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    summary = {
        "backbone": args.backbone, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "switches": {k: getattr(args, k) for k in ("no_amp", "no_channels_last", "no_fused", "no_cudnn_benchmark",
                                                   "compile", "synthetic")},
        **{f"{k}_img_s": round(v, 1) for k, v in med.items()},
        **{f"{k}_vs_reference": round(v / med["reference"], 2) for k, v in med.items() if k != "reference"},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary))
    write_record("trial_vs_reference", {**summary, "runs": runs})


if __name__ == "__main__":
    main()
