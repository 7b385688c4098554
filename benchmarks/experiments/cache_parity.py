"""Accuracy parity: loader='cache' against loader='pil' on tiny100, same configs, several seeds.

Each seed trains the same config twice (only `loader` differs) and records the final val_acc; the
cache passes when its mean is within the seeds' own spread of the PIL mean.

    python -m benchmarks.experiments.cache_parity --seeds 0 1 2 --epochs 4 --train-fraction 0.3
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.record import write_record
from benchmarks.experiments.search_comparison import stratified_subset
from trainable.local_sink import LocalSink
from trainable.trial import train_trial

BASE = {"backbone": "resnet10t", "train_size": 32, "eval_size": 32, "batch_size": 128, "num_workers": 0,
        "lr": 0.01, "warmup_epochs": 1, "weight_decay": 0.05, "scale_min": 0.35, "label_smoothing": 0.1,
        "augment": "trivialaugment"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/datasets/tiny100"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-fraction", type=float, default=0.3)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data.resolve()
        if args.train_fraction < 1.0:
            data = stratified_subset(data, args.train_fraction, 0, Path(tmp))
        rows = []
        for seed in args.seeds:
            for loader in ("pil", "cache"):
                config = {**BASE, "epochs": args.epochs, "seed": seed, "loader": loader, "data": str(data)}
                started = time.perf_counter()
                final = train_trial(config, LocalSink(Path(tmp) / f"{loader}-{seed}", printer=lambda _: None))
                rows.append({"seed": seed, "loader": loader, "val_acc": round(final["val_acc"], 4),
                             "train_img_s": round(final["train_images_per_s"], 1),
                             "minutes": round((time.perf_counter() - started) / 60, 2)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for loader in ("pil", "cache"):
        accs = [r["val_acc"] for r in rows if r["loader"] == loader]
        summary[loader] = {"mean": round(statistics.mean(accs), 4),
                           "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0}
    summary["cache_minus_pil"] = round(summary["cache"]["mean"] - summary["pil"]["mean"], 4)
    figures = {"config": BASE, "epochs": args.epochs, "train_fraction": args.train_fraction, "rows": rows,
               "summary": summary}
    print(json.dumps(figures))
    write_record("cache_parity", figures)


if __name__ == "__main__":
    main()
