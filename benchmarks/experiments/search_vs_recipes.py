"""Does the search beat the seed reports' hand-tuned recipes? Test accuracy at an equal budget of epochs.

Transfer task on tiny100, small enough for a CPU: a resnet10t is pretrained at 32 px on classes 0-49,
then fine-tuned on classes 50-99 (a seeded stratified --train-fraction of their train folders, to fit
one CPU core; all their val images; test = tiny100's test images labelled 50-99,
scored with test_labels.csv). Per seed, all at the same total of training epochs (5 x max_epochs):
    recipes    spaces/full.py's five WARM_STARTS on that backbone (benchmarks/experiments/space_finetune_tiny100.py),
               each trained to max_epochs; "best recipe" = the one with the best val_acc
    tpe_asha   the search: TPE + ASHA, warm starts first, stopped when its trials have trained the budget
    tpe_asha_anchored   the same, with the warm starts counted as TPE's start-up trials (Optuna's behaviour:
               TPE models from its first own trial, with the recipes as its good group)
    random     random search over the same space, no warm starts, no early stopping, same budget
For each: test accuracy of its best trial by val_acc, and of its ensemble (the project's ensemble
selection, ensemble/strategies.py, over its top 5 trials' kept checkpoints, chosen on val).
--extra-val-per-class N adds N of each class's train images, from those the train split left out, to val
(balanced, as tiny100's val and test are): everything that picks (the best recipe, ASHA, TPE, the
ensemble) sees more images. --extra-val-fraction F adds a stratified F instead (imbalanced, as train is:
it then picks for another class balance than test's).

    python -m benchmarks.experiments.search_vs_recipes --seeds 0 1 2 --train-fraction 0.6 --out /tmp/search_vs_recipes.jsonl

The datasets (symlinks), the pretrained backbone and the Tune runs go under --work (a temp folder,
never committed). Afterwards, the evidence (every recipe's and search trial's curve) and the table:

    python -m benchmarks.experiments.search_vs_recipes --explain /tmp/search_vs_recipes /tmp/search_vs_recipes.jsonl 0 1 2

and which recipe each way of picking on val (accuracy, balanced accuracy, tiny100's own val images) chooses:

    python -m benchmarks.experiments.search_vs_recipes --picks WORK WORK/data/<the fine-tuning data folder> 0 1 2
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch

from benchmarks.experiments.search_comparison import fit_search, stratified_subset
from benchmarks.record import write_record
from core.inference import Inference
from worker.scoring import Member
from core.storage import Location
from ensemble.strategies import combine, select_ensemble
from search.space_file import load_space
from trainable.checkpoint import load_model_file
from core.data import index_dataset

SPACE = Path(__file__).with_name("space_finetune_tiny100.py")
PRETRAIN_CLASSES, FINETUNE_CLASSES = range(0, 50), range(50, 100)
TOP_K = 5


# ------------------------------------------------------------------------------------ data and backbone

def half_dataset(source: Path, target: Path, classes: range) -> Path:
    """train/<k> and val/<k> for `classes`, and the test images labelled with them, as symlinks."""
    if (target / "test_labels.csv").exists():
        return target
    staging = target.with_name(target.name + ".tmp")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    for split in ("train", "val"):
        for k in classes:
            (staging / split / str(k)).mkdir(parents=True)
            for f in sorted((source / split / str(k)).iterdir()):
                (staging / split / str(k) / f.name).symlink_to(f.resolve())
    (staging / "test").mkdir()
    wanted = {str(k) for k in classes}
    with open(source / "test_labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in wanted]
    by_stem = {p.stem: p for p in (source / "test").iterdir()}
    for r in rows:
        (staging / "test" / by_stem[r["image_name"]].name).symlink_to(by_stem[r["image_name"]].resolve())
    with open(staging / "test_labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image_name", "label"])
        w.writeheader()
        w.writerows(rows)
    staging.rename(target)
    return target


def val_from_train(subset: Path, source: Path, seed: int, target_root: Path, *, fraction: float = 0.0,
                   per_class: int = 0) -> Path:
    """`subset` with more val images, taken from the train images its train split left out, so that picking
    trials, ASHA's rungs and the ensemble see more images (train and test unchanged): `per_class` of every
    class (balanced, like tiny100's val and test), or a stratified `fraction` of each class's train images
    (imbalanced, like train)."""
    extra_name = f"val+{per_class}perclass" if per_class else f"val+{int(fraction * 100)}pct"
    target = target_root / f"{subset.name}-{extra_name}-seed{seed}"
    if target.exists():
        return target
    rng = random.Random(seed)
    extra = {}
    for class_dir in sorted((source / "train").iterdir()):
        used = {f.name for f in (subset / "train" / class_dir.name).iterdir()}
        unused = sorted(f for f in class_dir.iterdir() if f.name not in used)
        wanted = per_class or round((len(unused) + len(used)) * fraction)
        if wanted > len(unused):
            raise SystemExit(f"class {class_dir.name} has {len(unused)} train images the train split left out, "
                             f"fewer than the {wanted} asked for val: lower --extra-val-per-class or --train-fraction")
        extra[class_dir.name] = rng.sample(unused, wanted)
    staging = target.with_name(target.name + ".tmp")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    staging.mkdir(parents=True)
    for name in ("train", "test", "test_labels.csv"):
        (staging / name).symlink_to((subset / name).resolve())
    for k, files in extra.items():
        (staging / "val" / k).mkdir(parents=True)
        for f in sorted((source / "val" / k).iterdir()) + files:
            (staging / "val" / k / f.name).symlink_to(f.resolve())
    staging.rename(target)
    return target


def scale_tag(backbone: str, size: int) -> str:
    """A suffix for the files of a backbone and size other than the CPU default (whose names predate them)."""
    return "" if (backbone, size) == ("resnet10t", 32) else f"-{backbone}-{size}px"


def pretrain_backbone(data: Path, out: Path, epochs: int, backbone: str = "resnet10t", size: int = 32,
                      num_workers: int = 0) -> tuple[Path, list[dict]]:
    """Train `backbone` from scratch on the pretraining half; save its backbone as a timm state dict."""
    tag = scale_tag(backbone, size)
    weights = out / f"{tag[1:] or backbone}-tiny100-classes0-49.pth"
    run = out / f"pretrain{tag}"
    if not weights.exists():
        cmd = [sys.executable, "-m", "trainable", "--data", str(data), "--backbone", backbone,
               "--train-size", str(size), "--eval-size", str(size), "--epochs", str(epochs), "--batch-size", "128",
               "--num-workers", str(num_workers), "--lr", "3e-3", "--weight-decay", "0.05", "--warmup-epochs", "1",
               "--augment", "trivialaugment", "--label-smoothing", "0.1", "--out", str(run)]
        subprocess.run(cmd, check=True)
        last = sorted((run / "checkpoints").glob("epoch_*"))[-1]
        state = load_model_file(last)["model"]
        torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, weights)
    return weights, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_epoch_val_acc(config: dict, out: Path) -> float:
    """Epoch-1 val_acc of a trial config: proves the weights file is really loaded (vs from scratch)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**config, "epochs": 1}))
    if not (out / "run" / "metrics.jsonl").exists():
        subprocess.run([sys.executable, "-m", "trainable", "--config", str(out / "config.json"), "--out",
                        str(out / "run")], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[0])["val_acc"]


# ------------------------------------------------------------------------------------ scoring

class Scorer:
    """Val and test logits of a trial's kept checkpoint; test labels from test_labels.csv."""

    def __init__(self, data: Path):
        index = index_dataset(data, warn=lambda _: None)
        label_of = {name: i for i, name in enumerate(index.classes)}
        truth = {r["image_name"]: r["label"] for r in csv.DictReader(open(data / "test_labels.csv"))}
        self.val = list(index.val)
        self.val_labels = np.array([label for _, label in self.val])
        self.test = [(p, label_of[truth[Path(p).stem]]) for p in index.test]
        self.test_labels = np.array([label for _, label in self.test])

    def logits(self, checkpoint: str) -> tuple[np.ndarray, np.ndarray, int]:
        member = Member.load(Location(str(checkpoint)))
        val = member.logits(self.val, Inference())
        test = member.logits(self.test, Inference())
        return val, test, sum(p.numel() for p in member.model.parameters())


def trial_rows(results) -> list[dict]:
    rows = []
    for r in results:
        if r.checkpoint is None or r.metrics is None:
            continue
        rows.append({"trial_id": r.metrics["trial_id"], "checkpoint": r.checkpoint.path,
                     "val_acc": load_model_file(Path(r.checkpoint.path))["metrics"]["val_acc"],
                     "epochs": r.metrics["training_iteration"], "params": {k: v for k, v in r.config.items()
                     if k in ("lr", "head_lr_mult", "weight_decay", "augment", "mixup_prob", "frozen_stages")}})
    return rows


def score(results, scorer: Scorer) -> dict:
    """Best trial by val_acc and the ensemble of the top TOP_K, both on test."""
    rows = sorted(trial_rows(results), key=lambda r: -r["val_acc"])[:TOP_K]
    logits = [scorer.logits(r["checkpoint"]) for r in rows]
    val = np.stack([v for v, _, _ in logits])
    test = np.stack([t for _, t, _ in logits])
    tests = [float((t.argmax(1) == scorer.test_labels).mean()) for t in test]
    selection = select_ensemble(val, scorer.val_labels, [n for _, _, n in logits], budget=100e6, seed=0)
    ensemble_pred = combine(selection.strategy, test, selection.weights).argmax(1)
    epochs = sum(r.metrics["training_iteration"] for r in results if r.metrics)
    return {"best_val_acc": rows[0]["val_acc"], "best_test_acc": tests[0],
            "ensemble_test_acc": float((ensemble_pred == scorer.test_labels).mean()),
            "ensemble_strategy": selection.strategy, "ensemble_members": int((selection.weights > 0).sum()),
            "epochs_spent": epochs, "trials": len(results),
            "top": [{**r, "test_acc": t, "checkpoint": None} for r, t in zip(rows, tests)]}


# ------------------------------------------------------------------------------------ main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/datasets/tiny100"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per recipe (default: the space's)")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--grace-period", type=int, help="ASHA's grace period (default: the space's, 1)")
    p.add_argument("--reduction-factor", type=int, help="ASHA's reduction factor (default: the space's, 2)")
    p.add_argument("--train-fraction", type=float, default=0.6,
                   help="seeded stratified fraction of the fine-tuning half's train split (val and test whole)")
    p.add_argument("--extra-val-fraction", type=float, default=0.0,
                   help="move a seeded stratified fraction of each class's train images, from those the train "
                        "split left out, into val (more images to pick trials on; test unchanged)")
    p.add_argument("--extra-val-per-class", type=int, default=0,
                   help="move this many train images of every class, from those the train split left out, into "
                        "val (balanced like tiny100's val and test; test unchanged)")
    p.add_argument("--backbone", default="resnet10t", help="pretrained on classes 0-49, then fine-tuned by all")
    p.add_argument("--size", type=int, default=32, help="train and eval px of the pretraining and every trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--concurrent", type=int, default=1, help="trials at a time (each gets 1 + --num-workers CPUs)")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers per trial and pretraining")
    p.add_argument("--variants", nargs="+", default=["recipes", "tpe_asha", "random"],
                   choices=["recipes", "tpe_asha", "tpe_asha_anchored", "random"])
    p.add_argument("--work", type=Path, default=Path("/tmp/search_vs_recipes"))
    p.add_argument("--out", type=Path, default=Path("/tmp/search_vs_recipes.jsonl"))
    args = p.parse_args()
    if args.extra_val_fraction and args.train_fraction + args.extra_val_fraction > 1.0:
        p.error("--train-fraction plus --extra-val-fraction must be at most 1 (val takes train images "
                "the train split left out)")
    if args.extra_val_fraction and args.extra_val_per_class:
        p.error("--extra-val-fraction and --extra-val-per-class are two ways to grow val; give one")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pre = half_dataset(args.data.resolve(), work / "data" / "tiny100-classes0-49", PRETRAIN_CLASSES)
    fine = half_dataset(args.data.resolve(), work / "data" / "tiny100-classes50-99", FINETUNE_CLASSES)
    if args.train_fraction < 1.0:
        fine = stratified_subset(fine, args.train_fraction, 0, work / "data")
    if args.extra_val_fraction or args.extra_val_per_class:
        fine = val_from_train(fine, work / "data" / "tiny100-classes50-99", 0, work / "data",
                              fraction=args.extra_val_fraction, per_class=args.extra_val_per_class)
    weights, pretrain_log = pretrain_backbone(pre, work, args.pretrain_epochs, args.backbone, args.size,
                                              args.num_workers)
    print(f"pretrained {args.backbone} at {args.size} px: val_acc {pretrain_log[-1]['val_acc']:.4f} on classes 0-49 after "
          f"{len(pretrain_log)} epochs ({time.time() - started:.0f}s)", flush=True)

    os.environ["SVR_BACKBONE"], os.environ["SVR_SIZE"] = args.backbone, str(args.size)  # read by SPACE
    space = load_space(SPACE)
    cpus_per_trial = 1 + args.num_workers
    space = space.replace_settings(cpus_per_trial=cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                                   max_concurrent=args.concurrent,
                                   trial={**space.settings.trial, "num_workers": args.num_workers})
    if args.max_epochs:
        space = space.replace_settings(max_epochs=args.max_epochs)
    if args.grace_period or args.reduction_factor:  # ASHA only: the recipes and random search run every epoch
        space = space.replace_settings(grace_period=args.grace_period or space.settings.grace_period,
                                       reduction_factor=args.reduction_factor or space.settings.reduction_factor)
    space = space.replace_settings(trial={**space.settings.trial, "weights_file": str(weights)})
    no_warm_starts = dataclasses.replace(space, warm_starts=())
    budget = len(space.warm_starts) * space.settings.max_epochs

    recipe0 = space.trial_config(space.warm_starts[0], str(fine))
    tag = scale_tag(args.backbone, args.size)
    check = {"with_weights": one_epoch_val_acc(recipe0, work / f"check-weights{tag}"),
             "from_scratch": one_epoch_val_acc({**recipe0, "pretrained": False, "weights_file": ""},
                                               work / f"check-scratch{tag}")}
    print(f"epoch-1 val_acc of recipe 000: {check}", flush=True)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=cpus_per_trial * args.concurrent, include_dashboard=False, logging_level="ERROR")
    scorer = Scorer(fine)
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            t0 = time.time()
            if variant == "recipes":
                results = fit_search(space, "recipes", seed, None, work / "tune", str(fine),
                                     num_samples=len(space.warm_starts))
            else:
                searched = {"random": no_warm_starts,
                            "tpe_asha_anchored": space.replace_settings(tpe_startup_counts_warm_starts=True)}
                results = fit_search(searched.get(variant, space), variant, seed, budget, work / "tune", str(fine))
            row = {"variant": variant, "seed": seed, **score(results, scorer), "budget": budget,
                   "asha": [space.settings.grace_period, space.settings.reduction_factor], "max_epochs": space.settings.max_epochs,
                   "val_images": len(scorer.val), "wall_s": round(time.time() - t0, 1),
                   "pretrain": {"epochs": len(pretrain_log), "val_acc": pretrain_log[-1]["val_acc"]},
                   "epoch1_check": check, "date": time.strftime("%Y-%m-%d"),
                   "backbone": args.backbone, "size": args.size, "concurrent": args.concurrent,
                   "gpus_per_trial": args.gpus_per_trial,
                   "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {cpus_per_trial * args.concurrent} used"
                              + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")}
            rows.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "top"}), flush=True)
    write_record("search_vs_recipes", rows)
    summarize(args.out)
    print(f"total {time.time() - started:.0f}s")


def summarize(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    print("| variant | best trial test acc | ensemble test acc | epochs spent | trials |")
    print("|---|---:|---:|---:|---:|")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cols = [[r[k] for r in mine] for k in ("best_test_acc", "ensemble_test_acc", "epochs_spent", "trials")]
        print(f"| {variant} | {100 * statistics.mean(cols[0]):.1f} ± {100 * sd(cols[0]):.1f} | "
              f"{100 * statistics.mean(cols[1]):.1f} ± {100 * sd(cols[1]):.1f} | {statistics.mean(cols[2]):.0f} | "
              f"{statistics.mean(cols[3]):.1f} |")



def curves(experiment: Path) -> list[dict]:
    """Every trial's per-epoch val_acc and searched values, from Tune's result.json files."""
    out = []
    for trial in sorted(experiment.glob("*/result.json")):
        reports = [json.loads(line) for line in trial.read_text().splitlines() if line.strip()]
        params = json.loads((trial.parent / "params.json").read_text())
        out.append({"trial_id": trial.parent.name, "val_acc": [r["val_acc"] for r in reports],
                    "lr": params.get("lr"), "augment": params.get("augment"), "mixup_prob": params.get("mixup_prob"),
                    "frozen_stages": params.get("frozen_stages"), "started": reports[0]["timestamp"] if reports else 0})
    return sorted(out, key=lambda c: c["started"])


def explain(work: Path, seeds) -> None:
    """Evidence for why the search does or does not beat the recipes: would ASHA's first rung have kept
    the recipe that was best after all epochs (recipes ran in full), and where the search's trials went."""
    for seed in seeds:
        recipes = curves(work / "tune" / f"recipes-seed{seed}")
        search = curves(work / "tune" / f"tpe_asha-seed{seed}")
        if not recipes:
            continue
        final = [c["val_acc"][-1] for c in recipes]
        first = [c["val_acc"][0] for c in recipes]
        best = max(range(len(final)), key=final.__getitem__)
        print(f"seed {seed} recipes (val_acc per epoch): " + "; ".join(
            f"lr {c['lr']:.0e} {'/'.join(f'{v:.3f}' for v in c['val_acc'])}" for c in recipes))
        print(f"  best recipe after all epochs: #{best}, its epoch-1 rank {sorted(first, reverse=True).index(first[best]) + 1}"
              f" of {len(first)}")
        for c in search:
            print(f"  search trial {c['trial_id']}: lr {c['lr']:.1e} augment {c['augment']} mixup {c['mixup_prob']} "
                  f"frozen {c['frozen_stages']}: {'/'.join(f'{v:.3f}' for v in c['val_acc'])}")


def picks(work: Path, data: Path, seeds) -> None:
    """Which recipe each way of picking on val chooses, and its test accuracy: accuracy and balanced accuracy
    (mean per-class recall) on `data`'s val, and accuracy on tiny100's own 500 val images within it."""
    from sklearn.metrics import balanced_accuracy_score

    scorer = Scorer(data)
    own = np.array([Path(p).resolve().parent.parent.name == "val" for p, _ in scorer.val])  # not train images
    for seed in seeds:
        rows = []
        for checkpoint in sorted((work / "tune" / f"recipes-seed{seed}").glob("*/checkpoint_*")):
            val, test, _ = scorer.logits(str(checkpoint))
            pred, y = val.argmax(1), scorer.val_labels
            rows.append({"trial": checkpoint.parent.name, "acc": (pred == y).mean(),
                         "balanced_acc": balanced_accuracy_score(y, pred), "own_val_acc": (pred[own] == y[own]).mean(),
                         "test_acc": (test.argmax(1) == scorer.test_labels).mean()})
        print(f"seed {seed}: " + "; ".join(f"{r['trial']} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()
                                                                          if k != "trial") for r in rows))
        for key in ("acc", "balanced_acc", "own_val_acc"):
            best = max(rows, key=lambda r: r[key])
            print(f"  picked by {key}: {best['trial']}, test_acc {best['test_acc']:.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--picks"]:  # python -m benchmarks.experiments.search_vs_recipes --picks WORK DATA SEED...
        picks(Path(sys.argv[2]), Path(sys.argv[3]), [int(s) for s in sys.argv[4:]])
    elif sys.argv[1:2] == ["--explain"]:  # python -m benchmarks.experiments.search_vs_recipes --explain WORK OUT.jsonl SEED...
        explain(Path(sys.argv[2]), [int(s) for s in sys.argv[4:]])
        summarize(Path(sys.argv[3]))
    else:
        main()
