"""Bytes and seconds per checkpoint, and per epoch of a search, before and after the checkpoint policy.

Per backbone (random init, 100 classes, the trial's own AdamW param groups after one optimizer step so
that its state exists; with and without EMA): the bytes of model.pt and train_state.pt written by
trainable/checkpoint.py, the seconds to save them (torch.save + os.fsync of both files: the disk, not the
page cache) and to restore them (after posix_fadvise DONTNEED drops both files from the page cache: a
cold read from the disk). Median of --repeats.

Per epoch: a 30-epoch trial under the full space's ASHA (grace 3, reduction 3, max 30) stops at epoch 3,
9, 27 or 30 with nominal shares 2/3, 2/9, 2/27, 1/27 of the trials. Before: a checkpoint every epoch.
After: core/checkpoint_policy.py (every `resume_state_every` epochs, the last epoch, and epochs that
enter the trial's top keep_checkpoints=2 by val_acc), counted on val_acc curves of benchmarks/tools/
scale_simulation.py's trial model (fitted to the recorded tiny100 curves, binomial noise of 2,100 val
images) for --curves configs drawn at random from spaces/full.py (nearly linear: the recorded curves were
short runs from scratch), on fine-tuning-like curves that saturate (val_acc = c (1 - exp(-e / tau)), tau
drawn from 1..4 epochs, same binomial noise), and on the two bounds: a strictly rising curve (every epoch
is a new best) and a strictly falling one (only cadence epochs and the first two).
For cadence-only saves (no top-k rule: cheaper, but the best epoch between two saves is lost) it prints how
much val_acc the best kept checkpoint loses against the true best epoch, on the same curves.

    python -m benchmarks.tools.checkpoint_cost --out results/bench/checkpoint_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


import timm.scheduler
import timm.utils
import torch

from benchmarks.record import write_record
from trainable import checkpoint
from core.checkpoint_policy import checkpoint_due
from core.config import TrialConfig
from trainable.model import build_model, count_parameters
from trainable.trial import make_optimizer

ASHA_STOPS = {3: 2 / 3, 9: 2 / 9, 27: 2 / 27, 30: 1 / 27}  # grace 3, reduction 3, max_t 30
MAX_EPOCHS = 30
KEEP = 2


def build_state(backbone: str, ema: bool):
    cfg = TrialConfig.from_dict({"backbone": backbone, "ema": ema, "epochs": MAX_EPOCHS})
    model = build_model(cfg, 100)
    optimizer = make_optimizer(cfg, model)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()  # AdamW's exp_avg and exp_avg_sq now exist
    optimizer.zero_grad(set_to_none=True)
    scheduler, _ = timm.scheduler.create_scheduler_v2(optimizer, sched="cosine", num_epochs=MAX_EPOCHS,
                                                      updates_per_epoch=100, step_on_epochs=False)
    averaged = timm.utils.ModelEmaV3(model, decay=0.999) if ema else None
    return cfg, model, averaged, optimizer, scheduler


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(backbone: str, ema: bool, repeats: int, root: Path) -> dict:
    cfg, model, averaged, optimizer, scheduler = build_state(backbone, ema)
    generator = torch.Generator().manual_seed(0)
    classes = [f"c{i:03d}" for i in range(100)]
    saves, restores, sizes = [], [], {}
    for r in range(repeats):
        directory = Path(tempfile.mkdtemp(prefix="ckpt-cost-", dir=root))
        files = [directory / checkpoint.MODEL_FILE, directory / checkpoint.TRAIN_STATE_FILE]
        started = time.perf_counter()
        checkpoint.save(directory, model=model, ema=averaged, optimizer=optimizer, scheduler=scheduler,
                        scaler=None, epoch=1, classes=classes, config=cfg.to_dict(), data_config={},
                        metrics={"val_acc": 0.5}, loader_generator=generator, history=[0.5])
        for f in files:
            fsync(f)
        saves.append(time.perf_counter() - started)
        sizes = {f.name: f.stat().st_size for f in files}
        for f in files:
            drop_from_page_cache(f)
        started = time.perf_counter()
        checkpoint.restore(directory, model=model, ema=averaged, optimizer=optimizer, scheduler=scheduler,
                           scaler=None, classes=classes, loader_generator=generator)
        restores.append(time.perf_counter() - started)
        for f in files:
            f.unlink()
        directory.rmdir()
    return {"backbone": backbone, "ema": ema, "param_count": count_parameters(model),
            "model_bytes": sizes[checkpoint.MODEL_FILE], "train_state_bytes": sizes[checkpoint.TRAIN_STATE_FILE],
            "save_s": statistics.median(saves), "restore_s": statistics.median(restores),
            "save_s_all": saves, "restore_s_all": restores}


def sample_curves(n: int, seed: int) -> list[list[float]]:
    import optuna

    from benchmarks.tools.scale_simulation import trial_model
    from spaces import full

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    curves = []
    for i in range(n):
        trial = study.ask()
        full.define(trial)
        _, accs = trial_model(trial.params, max_epochs=MAX_EPOCHS, base_epoch_s=1.0, seed=seed * 100_003 + i)
        study.tell(trial, accs[-1])
        curves.append(accs)
    return curves


def saturating_curves(n: int, seed: int, val_images: int = 2100) -> list[list[float]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n):
        c, tau = rng.uniform(0.85, 0.97), rng.uniform(1.0, 4.0)
        mean = c * (1 - np.exp(-np.arange(1, MAX_EPOCHS + 1) / tau))
        noise = rng.normal(0.0, 1.0, MAX_EPOCHS) * np.sqrt(mean * (1 - mean) / val_images)
        curves.append(np.clip(mean + noise, 0.0, 1.0).tolist())
    return curves


def cadence_only_rate(every: int) -> float:
    written = sum(share * sum(1 for e in range(1, stop + 1) if e % every == 0 or e == MAX_EPOCHS)
                  for stop, share in ASHA_STOPS.items())
    return written / sum(share * stop for stop, share in ASHA_STOPS.items())


def cadence_only_loss(curves: list[list[float]], every: int) -> tuple[float, float]:
    """Saves at multiples of `every` and the last epoch only, over the ASHA mix of trial lengths: the mean
    val_acc lost (true best epoch minus best saved epoch) of trials that have a checkpoint, and the share
    of trials left with none (a trial ASHA stops before its first save)."""
    lost = without = 0.0
    for accs in curves:
        for stop, share in ASHA_STOPS.items():
            saved = [accs[e - 1] for e in range(1, stop + 1) if e % every == 0 or e == MAX_EPOCHS]
            if saved:
                lost += share * (max(accs[:stop]) - max(saved))
            else:
                without += share
    with_some = len(curves) - without
    return (lost / with_some if with_some else float("nan")), without / len(curves)


def checkpoints_per_epoch(curves: list[list[float]], every: int, keep: int = KEEP) -> float:
    """Checkpoints written per trained epoch over the ASHA mix of trial lengths, averaged over the curves."""
    written = trained = 0.0
    for accs in curves:
        for stop, share in ASHA_STOPS.items():
            history, count = [], 0
            for e in range(1, stop + 1):
                metrics = {"val_acc": accs[e - 1]}
                count += checkpoint_due(e, metrics, history, epochs=MAX_EPOCHS, every=every, keep=keep,
                                        metric="val_acc")
                history.append(accs[e - 1])
            written += share * count
            trained += share * stop
    return written / trained


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "seresnextaa101d_32x8d"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--curves", type=int, default=200)
    parser.add_argument("--every", nargs="+", type=int, default=[1, 3, 5, 10])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="local-disk directory the checkpoints go to")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    curves = {"simulated": sample_curves(args.curves, seed=0),
              "saturating": saturating_curves(args.curves, seed=0),
              "rising": [[0.01 * e for e in range(1, MAX_EPOCHS + 1)]],
              "falling": [[0.5 - 0.01 * e for e in range(1, MAX_EPOCHS + 1)]]}
    rates = {name: {every: checkpoints_per_epoch(c, every) for every in args.every} for name, c in curves.items()}
    print(f"checkpoints per trained epoch, keep_checkpoints={KEEP} (before = 1.0):")
    for name, by_every in rates.items():
        print(f"  {name:<10} " + "  ".join(f"every={k}: {v:.3f}" for k, v in by_every.items()))
    keep_one = {name: {every: checkpoints_per_epoch(c, every, keep=1) for every in args.every}
                for name, c in curves.items()}
    print("the same with keep_checkpoints=1 (only new bests; the ensemble reads one checkpoint per trial):")
    for name, by_every in keep_one.items():
        print(f"  {name:<10} " + "  ".join(f"every={k}: {v:.3f}" for k, v in by_every.items()))
    cadence_only = {}
    for name in ("simulated", "saturating"):
        cadence_only[name] = {}
        for every in args.every:
            lost, without = cadence_only_loss(curves[name], every)
            cadence_only[name][every] = {"checkpoints_per_epoch": cadence_only_rate(every), "val_acc_lost": lost,
                                         "trials_without_checkpoint": without}
    print("cadence only (no top-k rule): checkpoints per epoch, mean best val_acc lost, share of trials left "
          "without any checkpoint:")
    for name, by_every in cadence_only.items():
        print(f"  {name:<10} " + "  ".join(
            f"every={k}: {v['checkpoints_per_epoch']:.3f} {v['val_acc_lost']:.4f} {v['trials_without_checkpoint']:.2f}"
            for k, v in by_every.items()))

    rows = []
    for backbone in args.backbones:
        for ema in (False, True):
            row = measure(backbone, ema, args.repeats, Path(args.dir))
            rows.append(row)
            full_mb = (row["model_bytes"] + row["train_state_bytes"]) / 1e6
            print(f"{backbone:<24} ema={ema!s:<5} params {row['param_count'] / 1e6:.1f}M  model.pt "
                  f"{row['model_bytes'] / 1e6:.1f} MB  train_state.pt {row['train_state_bytes'] / 1e6:.1f} MB  "
                  f"save {row['save_s']:.2f}s  restore {row['restore_s']:.2f}s")
            for name, by_every in rates.items():
                print(f"    per epoch, {name:<9} " + "  ".join(
                    f"every={k}: {full_mb * v:.0f} MB {row['save_s'] * v:.2f}s" for k, v in by_every.items()))
    figures = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}", "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "dir": args.dir, "rows": rows,
        "checkpoints_per_epoch": {n: {str(k): v for k, v in r.items()} for n, r in rates.items()},
        "checkpoints_per_epoch_keep1": {n: {str(k): v for k, v in r.items()} for n, r in keep_one.items()},
        "cadence_only": {n: {str(k): v for k, v in r.items()} for n, r in cadence_only.items()}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=1))
    write_record("checkpoint_cost", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
