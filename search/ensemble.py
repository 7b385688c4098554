"""Promote a search's top trials into an ensemble and predict DATA/test.

    python search/ensemble.py results/<name> [--top-k 5] [--budget-m 100] [--tta] [--tta-size 320]

leaderboard.csv → candidates (the top K trials that ran at least min_epochs) → each candidate's val
and test logits, computed once and cached in ensemble_cache/ → the best combination within the
parameter budget, chosen by cross-validation on val (search/ensemble_strategies.py) → in results/<name>/:

    ensemble.json          members (trial, checkpoint, weight, parameters), strategy, every score, method
    prediction.csv         image_name,pred_label for DATA/test (file stem, class-folder name)
    per_class.csv          the ensemble's precision/recall/F1 per class on val
    confusion_matrix.png   the ensemble's val confusion matrix, also in TensorBoard under ensemble/

search/predict.py predicts any folder of images with the saved ensemble.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from search import ensemble_strategies as strategies
from trainable.checkpoint import MODEL_FILE, load_model_file
from trainable.config import TrialConfig
from trainable.data import DatasetIndex, ImageListDataset, index_dataset, resolve_data_root
from trainable.errors import UserError
from trainable.loop import StepSettings, predict_logits
from trainable.model import build_model, count_parameters
from trainable.transforms import eval_transform
from trainable.trial import pick_amp_dtype, pick_device

MANIFEST = "ensemble.json"
PREDICTIONS = "prediction.csv"
PER_CLASS = "per_class.csv"
CONFUSION_PNG = "confusion_matrix.png"
CACHE_DIR = "ensemble_cache"
TENSORBOARD_DIR = "ensemble"
WORST_SHOWN = 10
_CACHE_VERSION = 1


class EnsembleError(UserError):
    pass


# ------------------------------------------------------------------------------------ inference

@dataclass(frozen=True)
class Inference:
    """How members see an image: the same for validation (where the ensemble is chosen) and test."""

    flip: bool = False       # average the logits of the image and its mirror
    size: int | None = None  # crop side; None = each member's own eval_size

    @property
    def tag(self) -> str:
        return f"{'flip' if self.flip else 'plain'}-{self.size or 'eval'}"


class FlipAveraged(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(torch.flip(x, dims=[3]))) / 2


@dataclass
class Member:
    """A checkpoint rebuilt into an evaluable model."""

    model: nn.Module
    cfg: TrialConfig  # as rebuilt for inference (pretrained off)
    config: dict      # as the trial ran
    data_config: dict
    classes: list[str]

    @classmethod
    def load(cls, checkpoint: Path) -> "Member":
        """Raises whatever a missing, truncated or foreign file raises: callers decide whether to skip."""
        saved = load_model_file(checkpoint)
        # No pretrained download: the checkpoint's weights replace them anyway.
        cfg = TrialConfig.from_dict({**saved["config"], "pretrained": False, "weights_file": ""})
        model = build_model(cfg, len(saved["classes"]))
        model.load_state_dict(saved["model"])
        return cls(model, cfg, saved["config"], saved["data_config"], list(saved["classes"]))

    def logits(self, samples, inference: Inference) -> tuple[np.ndarray, np.ndarray]:
        """(logits [N, C], labels [N]; -1 for bare paths) in the order of `samples`."""
        if not samples:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros(0, np.int64)
        device = pick_device()
        step = StepSettings(device=device, amp_dtype=pick_amp_dtype(self.cfg, device))
        transform = eval_transform(self.cfg, self.data_config, size=inference.size)
        loader = DataLoader(ImageListDataset(samples, transform), batch_size=self.cfg.batch_size, shuffle=False,
                            num_workers=self.cfg.num_workers)
        net = (FlipAveraged(self.model) if inference.flip else self.model).to(device)
        logits, labels = predict_logits(net, loader, step)
        return logits.numpy(), labels.numpy()


# ------------------------------------------------------------------------------------ candidates

@dataclass
class Candidate:
    trial_id: str
    checkpoint: str
    config: dict
    classes: list[str]
    param_count: int
    val_samples: list[tuple[str, int]]
    val_logits: np.ndarray
    test_files: list[str]
    test_logits: np.ndarray


def read_leaderboard(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "leaderboard.csv"
    if not path.is_file():
        raise EnsembleError(f"No leaderboard at {path}. Give a search's results folder (results/<name>), "
                            "after the search has finished or been interrupted.")
    # Ids and paths stay text: a trial id like "12345678" must not become a number.
    table = pd.read_csv(path, dtype={"trial_id": str, "best_checkpoint": str, "ended": str})
    return table.fillna({"best_checkpoint": "", "ended": ""})


def qualifying_trials(table: pd.DataFrame, top_k: int, min_epochs: int | None) -> tuple[pd.DataFrame, int]:
    """The top_k best-ranked trials that did not error and ran >= min_epochs (default: the most any ran,
    i.e. the trials ASHA let finish); returns them and the min_epochs used."""
    ran = table[~table["ended"].str.startswith("error")]
    if ran.empty:
        raise EnsembleError(f"No finished trials: all {len(table)} trial(s) in the leaderboard errored "
                            "(reasons in leaderboard.md), so there is nothing to ensemble.")
    most = int(ran["epochs"].max())
    need = most if min_epochs is None else min_epochs
    qualified = ran[ran["epochs"] >= need].sort_values("rank")
    if qualified.empty:
        raise EnsembleError(f"No trial ran at least {need} epochs (the most any ran is {most}); "
                            f"lower --min-epochs.")
    return qualified.head(top_k), need


@dataclass
class Loader:
    """Turns leaderboard rows into Candidates, via the logits cache; one dataset index per data setting."""

    run_dir: Path
    inference: Inference
    data: str | None = None  # overrides the checkpoints' data path (a dataset that moved)
    say: Callable[[str], None] = print
    skipped: list[dict] = field(default_factory=list)
    _indexes: dict = field(default_factory=dict)

    def load(self, row) -> Candidate | None:
        checkpoint = Path(row.best_checkpoint) if row.best_checkpoint else None
        if checkpoint is None or not (checkpoint / MODEL_FILE).is_file():
            return self._skip(row.trial_id, f"its best checkpoint {checkpoint or '(none recorded)'} has no {MODEL_FILE}")
        cache_file = self.run_dir / CACHE_DIR / f"{row.trial_id}-{checkpoint.name}-{self.inference.tag}.pt"
        stamp = _file_stamp(checkpoint / MODEL_FILE)
        cached = _read_cache(cache_file, stamp)
        if cached is not None and self._still_valid(cached):
            return cached
        try:
            member = Member.load(checkpoint)
        except Exception as err:  # truncated, corrupt, foreign: any of them means "cannot use this one"
            return self._skip(row.trial_id, f"{checkpoint / MODEL_FILE} cannot be loaded ({type(err).__name__}: {err})")
        candidate = self._compute(row.trial_id, checkpoint, member)
        _write_cache(cache_file, candidate, stamp)
        return candidate

    def index_for(self, config: dict) -> DatasetIndex:
        """The dataset exactly as the trial saw it: same hold-out seed, fraction and size filter."""
        cfg = TrialConfig.from_dict({**config, "data": self.data or config["data"]})
        key = (cfg.data, cfg.val_fraction, cfg.seed, cfg.min_image_side)
        if key not in self._indexes:
            try:
                self._indexes[key] = index_dataset(resolve_data_root(cfg.data), val_fraction=cfg.val_fraction,
                                                   seed=cfg.seed, min_image_side=cfg.min_image_side, warn=self.say)
            except UserError as err:
                hint = "" if self.data else " The trials were trained on this data; if it has moved, pass --data."
                raise EnsembleError(f"{err}{hint}") from err
        return self._indexes[key]

    def _still_valid(self, cached: Candidate) -> bool:
        index = self.index_for(cached.config)
        return cached.val_samples == list(index.val) and cached.test_files == list(index.test)

    def _compute(self, trial_id: str, checkpoint: Path, member: Member) -> Candidate:
        index = self.index_for(member.config)
        if member.classes != list(index.classes):
            raise EnsembleError(f"Trial {trial_id} was trained on classes {member.classes[:5]}..., but "
                                f"{index.root} now has {list(index.classes)[:5]}...; its predictions would be "
                                "mislabelled. Point --data at the dataset the search used.")
        self.say(f"Computing logits of trial {trial_id} ({checkpoint.name}, {self.inference.tag}) on "
                 f"{len(index.val)} val and {len(index.test)} test images")
        val_logits, _ = member.logits(list(index.val), self.inference)
        test_logits, _ = member.logits(list(index.test), self.inference)
        return Candidate(trial_id, str(checkpoint), member.config, member.classes,
                         count_parameters(member.model), list(index.val), val_logits, list(index.test), test_logits)

    def _skip(self, trial_id: str, reason: str) -> None:
        self.say(f"Skipping trial {trial_id}: {reason}.")
        self.skipped.append({"trial_id": trial_id, "reason": reason})
        return None


def _file_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_cache(path: Path, stamp: list[int]) -> Candidate | None:
    try:
        data = torch.load(path, weights_only=False)
        if data.pop("version") != _CACHE_VERSION or data.pop("stamp") != stamp:
            return None  # the checkpoint was rewritten since
        data["val_samples"] = [tuple(s) for s in data["val_samples"]]
        return Candidate(**data)
    except Exception:  # absent or damaged cache: recompute
        return None


def _write_cache(path: Path, candidate: Candidate, stamp: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"version": _CACHE_VERSION, "stamp": stamp, **asdict(candidate)}, tmp)
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache entry


def check_same_validation(candidates: list[Candidate]) -> None:
    """Logits can only be combined image by image if every member saw the same images, same labels."""
    first = candidates[0]
    for other in candidates[1:]:
        if other.classes != first.classes:
            raise EnsembleError(f"Trials {first.trial_id} and {other.trial_id} have different class lists "
                                f"({first.classes[:5]}... vs {other.classes[:5]}...); they cannot be ensembled.")
        if other.val_samples != first.val_samples:
            raise EnsembleError(
                f"Trials {first.trial_id} and {other.trial_id} were validated on different images (different "
                f"data, val_fraction, seed or min_image_side: {_data_settings(first.config)} vs "
                f"{_data_settings(other.config)}); an ensemble chosen on val needs one shared val set.")


def _data_settings(config: dict) -> str:
    return ", ".join(f"{k}={config[k]}" for k in ("data", "val_fraction", "seed", "min_image_side"))


# ------------------------------------------------------------------------------------ the ensemble

def build_ensemble(run_dir: Path, *, top_k: int = 5, min_epochs: int | None = None, budget_m: float = 100.0,
                   tta: bool = False, tta_size: int | None = None, strategy: str = "auto", metric: str = "acc",
                   cv_folds: int = 5, min_gain: float = 0.0, data: str | None = None, say=print) -> dict:
    """Choose, save and apply the ensemble; returns what ensemble.json holds.

    Raises EnsembleError (a UserError) for what the user can fix: no leaderboard, no finished trial,
    nothing loadable, nothing within the budget, mismatched val sets, and no test images (after
    ensemble.json has been written, so search/predict.py can still be used on another folder).
    """
    run_dir = Path(run_dir)
    _check_arguments(top_k, budget_m, tta_size, strategy, metric, cv_folds, min_gain)
    rows, need = qualifying_trials(read_leaderboard(run_dir), top_k, min_epochs)
    loader = Loader(run_dir, Inference(tta, tta_size), data, say)
    candidates = [c for c in (loader.load(row) for row in rows.itertuples()) if c is not None]
    if not candidates:
        raise EnsembleError(f"None of the {len(rows)} qualifying trial(s) has a loadable checkpoint (see above).")
    check_same_validation(candidates)
    budget = budget_m * 1e6
    if min(c.param_count for c in candidates) > budget:
        raise EnsembleError(f"No candidate fits the {budget_m:g}M parameter budget (the smallest has "
                            f"{min(c.param_count for c in candidates) / 1e6:.2f}M); raise --budget-m.")

    labels = np.array([label for _, label in candidates[0].val_samples])
    selection = strategies.select_ensemble(
        np.stack([c.val_logits for c in candidates]), labels, [c.param_count for c in candidates],
        budget=budget, strategy=strategy, metric=metric, cv_folds=cv_folds, min_gain=min_gain)
    classes = candidates[0].classes
    val_pred = strategies.combine(selection.strategy, np.stack([c.val_logits for c in candidates]),
                                  selection.weights).argmax(axis=1)
    per_class = per_class_table(labels, val_pred, classes)
    per_class.to_csv(run_dir / PER_CLASS, index=False)
    worst = worst_classes(per_class)
    plot_confusion(run_dir, labels, val_pred, classes, selection)

    manifest = _manifest(candidates, selection, worst, loader, need, budget_m, top_k)
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    say(summary(manifest))

    test_files = candidates[0].test_files
    (run_dir / PREDICTIONS).unlink(missing_ok=True)  # never leave an older ensemble's predictions behind
    if not test_files:
        root = loader.index_for(candidates[0].config).root
        raise EnsembleError(f"{root / 'test'} has no images, so there is nothing to predict: {run_dir / MANIFEST} "
                            f"was written but not {PREDICTIONS}. Add images there, or predict any folder with "
                            f"`python search/predict.py {run_dir} FOLDER`.")
    test_scores = strategies.combine(selection.strategy, np.stack([c.test_logits for c in candidates]),
                                     selection.weights)
    write_predictions(run_dir / PREDICTIONS, test_files, test_scores.argmax(axis=1), classes, say)
    say(f"Predictions for {len(test_files)} test images: {run_dir / PREDICTIONS}")
    return manifest


def _check_arguments(top_k, budget_m, tta_size, strategy, metric, cv_folds, min_gain) -> None:
    problems = []
    if top_k < 1:
        problems.append(f"top_k is {top_k}, but must be >= 1")
    if not budget_m > 0:
        problems.append(f"budget_m is {budget_m}, but must be > 0 (millions of parameters)")
    if tta_size is not None and not 16 <= tta_size <= 1024:
        problems.append(f"tta_size is {tta_size}, but must be in [16, 1024] px")
    if strategy != "auto" and strategy not in strategies.STRATEGIES:
        problems.append(f"strategy is {strategy!r}, but must be one of auto, {', '.join(strategies.STRATEGIES)}")
    if metric not in strategies.METRICS:
        problems.append(f"metric is {metric!r}, but must be one of {', '.join(strategies.METRICS)}")
    if cv_folds < 0 or cv_folds == 1:
        problems.append(f"cv_folds is {cv_folds}, but must be 0 (no cross-validation) or >= 2")
    if not 0 <= min_gain < 1:
        problems.append(f"min_gain is {min_gain}, but must be in [0, 1)")
    if problems:
        raise EnsembleError("; ".join(problems) + ".")


def _manifest(candidates, selection, worst: pd.DataFrame, loader: Loader, min_epochs: int, budget_m: float,
              top_k: int) -> dict:
    alone = {c.trial_id: s for c, s in zip(candidates, selection.members)}
    members = [{"trial_id": c.trial_id, "checkpoint": c.checkpoint, "weight": float(w), "param_count": c.param_count,
                "backbone": c.config["backbone"], "val_acc": alone[c.trial_id]["acc"],
                "val_macro_f1": alone[c.trial_id]["macro_f1"]}
               for c, w in zip(candidates, selection.weights) if w > 0]
    return {
        "strategy": selection.strategy,
        "members": members,
        "param_total": sum(m["param_count"] for m in members),
        "budget_m": budget_m,
        "inference": asdict(loader.inference),
        "classes": candidates[0].classes,
        "min_image_side": candidates[0].config["min_image_side"],
        "selection": {**selection.method, "top_k": top_k, "min_epochs": min_epochs,
                      "candidates": [c.trial_id for c in candidates], "skipped": loader.skipped},
        "scores": {
            "members": [{"trial_id": c.trial_id, "param_count": c.param_count, **s}
                        for c, s in zip(candidates, selection.members)],
            "strategies": selection.strategies,
        },
        "val_images": len(candidates[0].val_samples),
        "test_images": len(candidates[0].test_files),
        "worst_classes": worst.to_dict(orient="records"),
    }


# -------------------------------------------------------------------------------------- outputs

def per_class_table(labels: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=np.arange(len(classes)), zero_division=0)
    return pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1,
                         "support": support.astype(int)})


def worst_classes(per_class: pd.DataFrame, n: int = WORST_SHOWN) -> pd.DataFrame:
    # Classes without val images have nothing to judge them by.
    judged = per_class[per_class["support"] > 0]
    return judged.sort_values(["f1", "recall", "class"], kind="stable").head(n).reset_index(drop=True)


def write_predictions(path: Path, files, pred: np.ndarray, classes: list[str], say=print) -> None:
    table = pd.DataFrame({"image_name": [Path(f).stem for f in files],
                          "pred_label": [classes[i] for i in pred]})
    repeated = table["image_name"][table["image_name"].duplicated()].unique()
    if len(repeated):
        say(f"Warning: {len(repeated)} image name(s) occur more than once with different extensions "
            f"(first: {', '.join(repeated[:5])}); prediction.csv has one row per file.")
    table.to_csv(path, index=False)


def plot_confusion(run_dir: Path, labels, pred, classes: list[str], selection) -> None:
    """confusion_matrix.png, and the same figure plus the headline scores in TensorBoard."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display needed
    from sklearn.metrics import confusion_matrix
    from tensorboardX import SummaryWriter

    matrix = confusion_matrix(labels, pred, labels=np.arange(len(classes)), normalize="true")
    side = min(4 + 0.12 * len(classes), 20)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    if len(classes) <= 30:  # beyond that, tick labels overlap into noise
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{selection.strategy} ensemble on val (rows normalised)")
    fig.savefig(run_dir / CONFUSION_PNG, dpi=100)

    for old in (run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
        old.unlink()  # TensorBoard shows the current ensemble, not every earlier attempt on top of it
    with SummaryWriter(str(run_dir / TENSORBOARD_DIR)) as writer:
        writer.add_figure("ensemble/confusion_matrix_val", fig, close=False)
        scores = selection.strategies[selection.strategy]
        for basis in ("val", "cv"):
            for key in ("acc", "macro_f1"):
                if basis in scores:
                    writer.add_scalar(f"ensemble/{basis}_{key}", scores[basis][key])


def summary(manifest: dict) -> str:
    members = pd.DataFrame(manifest["scores"]["members"]).set_index("trial_id")
    members["params_m"] = members.pop("param_count") / 1e6
    rows = {name: {"members": s["members"], "params_m": s["params"] / 1e6,
                   **{f"val_{k}": s["val"][k] for k in ("acc", "macro_f1")},
                   **{f"cv_{k}": s["cv"][k] for k in ("acc", "macro_f1") if "cv" in s}}
            for name, s in manifest["scores"]["strategies"].items()}
    chosen = ", ".join(f"{m['trial_id']} ({m['backbone']}, weight {m['weight']:.2f})" for m in manifest["members"])
    worst = ", ".join(f"{w['class']} (F1 {w['f1']:.2f})" for w in manifest["worst_classes"])
    return "\n".join([
        f"Candidates on {manifest['val_images']} val images (val_acc, val_macro_f1 alone):",
        members[["params_m", "acc", "macro_f1"]].to_string(float_format="%.4f"),
        f"Strategies (val: fitted and scored on all of val; cv: out-of-fold; chosen by "
        f"{manifest['selection']['picked_by']}):",
        pd.DataFrame.from_dict(rows, orient="index").to_string(float_format="%.4f"),
        f"Ensemble: {manifest['strategy']} of {len(manifest['members'])} member(s), "
        f"{manifest['param_total'] / 1e6:.2f}M of {manifest['budget_m']:g}M parameters: {chosen}.",
        f"Worst classes on val: {worst}.",
    ])


# ------------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python search/ensemble.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a search's results folder, results/<name>")
    p.add_argument("--top-k", type=int, default=5, help="candidates: the K best qualifying trials (default 5)")
    p.add_argument("--min-epochs", type=int, help="trials must have run this many epochs (default: the most any ran)")
    p.add_argument("--budget-m", type=float, default=100.0, help="max parameters of the ensemble, millions (default 100)")
    p.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    p.add_argument("--tta-size", type=int, help="inference crop side in px (default: each trial's eval_size)")
    p.add_argument("--strategy", default="auto", choices=["auto", *strategies.STRATEGIES])
    p.add_argument("--metric", default="acc", choices=strategies.METRICS, help="what selection maximises")
    p.add_argument("--cv-folds", type=int, default=5, help="folds of val for choosing the strategy (0 = none)")
    p.add_argument("--min-gain", type=float, default=0.0, help="metric each member beyond the first must add")
    p.add_argument("--data", help="dataset path, if it moved since the search (default: the trials' own)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        build_ensemble(args.run_dir, top_k=args.top_k, min_epochs=args.min_epochs, budget_m=args.budget_m,
                       tta=args.tta, tta_size=args.tta_size, strategy=args.strategy, metric=args.metric,
                       cv_folds=args.cv_folds, min_gain=args.min_gain, data=args.data)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
