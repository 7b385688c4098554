"""Promote a search's top trials into an ensemble and predict DATA/test.

    python -m ensemble results/<name> [--top-k 5] [--budget-m 100] [--tta] [--tta-size 320] [--address auto]

leaderboard.csv -> candidates (the top K trials that ran at least min_epochs) -> each candidate's val and
test logits, computed once by a task next to its checkpoint (ensemble/tasks.py, worker/scoring.py) and
cached in ensemble_cache/ -> the best combination within the parameter budget, chosen by
cross-validation on val (ensemble/strategies.py) -> in results/<name>/:

    ensemble.json          members (trial, checkpoint, weight, parameters), strategy, every score, method
    prediction.csv         image_name,pred_label for DATA/test (file stem, class-folder name)
    per_class.csv          the ensemble's precision/recall/F1 per class on val
    confusion_matrix.png   the ensemble's val confusion matrix, also in TensorBoard under ensemble/
    prediction_refit.csv   with --refit: the refit ensemble's predictions (ensemble/refit.py)

This is the driver side: it gathers logits and selects, and never imports torch.
`python -m ensemble.predict` predicts any folder of images with the saved ensemble.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core.atomic import write_text
from core.data import shown
from core.errors import EnsembleError
from core.files import ENSEMBLE_MANIFEST as MANIFEST
from core.files import MODEL_FILE, PER_CLASS, PREDICTIONS, REFIT_PREDICTIONS
from core.inference import Inference, data_values
from core.run_format import check_run_folder
from core.storage import Location, model_file_stamp
from core.subsets import SubsetError, check_fits
from ensemble import strategies
from ensemble.candidates import (Candidate, cache_file, check_same_validation, qualifying_trials, read_cache,
                                 read_leaderboard, write_cache)
from ensemble.refit import RefitScheme, best_epochs_of, refit_ensemble
from ensemble.report import per_class_table, plot_confusion, summary, worst_classes, write_predictions
from ensemble.tasks import Resources, Runner


# ------------------------------------------------------------------------------------ candidates

@dataclass
class Gatherer:
    """Turns leaderboard rows into Candidates: cached logits where still valid, the rest scored by tasks,
    all in flight at once."""

    run_dir: Path
    inference: Inference
    runner: Runner
    data: str | None = None     # overrides the checkpoints' data path (a dataset that moved)
    storage: str | None = None  # the run's storage URI, for checkpoints recorded as paths inside a bucket
    say: Callable[[str], None] = print
    skipped: list[dict] = field(default_factory=list)

    def gather(self, rows: pd.DataFrame) -> list[Candidate]:
        found: dict[str, Candidate] = {}
        to_score: list[tuple[str, Location, list[int]]] = []
        for row in rows.itertuples():
            location = Location(row.best_checkpoint, self.storage) if row.best_checkpoint else None
            stamp = model_file_stamp(location) if location is not None else None
            if stamp is None:
                hint = ("; a path inside a bucket: pass the search's --storage URI (s3://...)"
                        if location and not self.storage and not Path(location.path).is_absolute() else "")
                self._skip(row.trial_id, f"its best checkpoint {location or '(none recorded)'} has no {MODEL_FILE}{hint}")
                continue
            cached = read_cache(cache_file(self.run_dir, row.trial_id, location, self.inference), stamp)
            if cached is not None:
                found[row.trial_id] = cached
            else:
                to_score.append((row.trial_id, location, stamp))
        for stale in self._stale(found.values()):
            del found[stale.trial_id]
            to_score.append((stale.trial_id, Location(stale.checkpoint, self.storage), None))

        for trial_id, location, _ in to_score:
            self.say(f"Computing logits of trial {trial_id} ({location.name}, {self.inference.tag})")
        payloads = self.runner.score([(trial_id, location, self.inference, self.data)
                                      for trial_id, location, _ in to_score])
        for (trial_id, location, stamp), payload in zip(to_score, payloads):
            if "skip" in payload:
                self._skip(trial_id, payload["skip"])
                continue
            candidate = Candidate.from_payload(payload)
            write_cache(cache_file(self.run_dir, trial_id, location, self.inference), candidate,
                        stamp or model_file_stamp(location))
            found[trial_id] = candidate
        order = list(rows["trial_id"])
        self.skipped.sort(key=lambda s: order.index(s["trial_id"]))
        return [found[t] for t in order if t in found]

    def _stale(self, cached) -> list[Candidate]:
        """Cached candidates whose dataset changed since (other val/test lists or classes): one indexing
        task per distinct data setting."""
        groups: dict[tuple, list[Candidate]] = {}
        for candidate in cached:
            groups.setdefault(tuple(data_values(candidate.config).values()), []).append(candidate)
        now = self.runner.lists([(group[0].config, self.data) for group in groups.values()])
        stale = []
        for group, lists in zip(groups.values(), now):
            val = [tuple(s) for s in lists["val_samples"]]
            stale += [c for c in group if (c.val_samples, c.test_files, c.classes)
                      != (val, lists["test_files"], lists["classes"])]
        return stale

    def _skip(self, trial_id: str, reason: str) -> None:
        self.say(f"Skipping trial {trial_id}: {reason}.")
        self.skipped.append({"trial_id": trial_id, "reason": reason})


# ------------------------------------------------------------------------------------ the ensemble

def build_ensemble(run_dir: Path, *, top_k: int = 5, min_epochs: int | None = None, budget_m: float = 100.0,
                   tta: bool = False, tta_size: int | None = None, strategy: str = "auto", metric: str = "acc",
                   cv_folds: int = 5, min_gain: float = 0.0, data: str | None = None, storage: str | None = None,
                   resources: Resources | None = None, use_ray: bool | None = None, refit: str | None = None,
                   refit_tune: dict | None = None, out_dir: Path | None = None, options: dict | None = None,
                   say=print) -> dict:
    """Choose, save and apply the ensemble; returns what ensemble.json holds.

    Members are scored as Ray tasks with `resources` (default: the trials' own, from the run's space.py)
    when Ray is up (use_ray=None), else in this process. `storage` is the run's storage URI (--storage),
    needed when the leaderboard records checkpoints as paths inside a bucket.

    `refit` ("kfold:K" or "bag:N") also retrains the candidates on train+val as Ray Tune trials and
    ensembles them (ensemble/refit.py): ensemble.json gets a `refit` section, DATA/test prediction_refit.csv.
    `refit_tune`: extra options of its Tune run (max_failures, max_concurrent, callbacks).
    `out_dir`: where the ensemble's files go (default run_dir: the search's own; python -m ensemble with other
    options passes RUN/ensembles/<tag>); `options`: the options as given, recorded in ensemble.json.

    Raises EnsembleError (a UserError) for what the user can fix: no leaderboard, no finished trial,
    nothing loadable, nothing within the budget, mismatched val sets, and no test images (after
    ensemble.json has been written, so `python -m ensemble.predict` can still be used on another folder).
    """
    run_dir = Path(run_dir)
    check_run_folder(run_dir, "its ensemble")
    _check_arguments(top_k, budget_m, tta_size, strategy, metric, cv_folds, min_gain)
    scheme = RefitScheme.parse(refit) if refit is not None else None
    rows, need = qualifying_trials(read_leaderboard(run_dir), top_k, min_epochs)
    runner = Runner(resources or Resources.of_run(run_dir), use_ray)
    gatherer = Gatherer(run_dir, Inference(tta, tta_size), runner, data, storage, say)
    candidates = gatherer.gather(rows)
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
    if scheme is not None:  # a refit the data or the leaderboard cannot take is refused before anything is written
        best_epochs_of(rows, candidates)
        pooled = gatherer.runner.lists([(candidates[0].config, data)])[0]["pooled_samples"]
        try:
            check_fits(scheme.scheme, scheme.count, [label for _, label in pooled], candidates[0].classes)
        except SubsetError as err:
            raise EnsembleError(f"--refit {err} Nothing was written.") from None
    classes = candidates[0].classes
    val_pred = strategies.combine(selection.strategy, np.stack([c.val_logits for c in candidates]),
                                  selection.weights).argmax(axis=1)
    # Class-folder names need not be valid UTF-8: the tables and the figure show them escaped.
    per_class = per_class_table(labels, val_pred, [shown(c) for c in classes])
    worst = worst_classes(per_class)
    manifest = _manifest(candidates, selection, worst, gatherer, need, budget_m, top_k)
    manifest["options"] = options or {}
    test_files = candidates[0].test_files

    # Every file is written whole and moved into place (core/atomic.py); nothing is deleted first. A refit's
    # results (the `refit` section, prediction_refit.csv) stay until a refit that finishes replaces them.
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier_refit = _earlier_refit(out_dir)
    if earlier_refit is not None:
        manifest["refit"] = earlier_refit
        say(f"Kept the earlier refit ({earlier_refit.get('scheme')}) in {out_dir / MANIFEST}"
            + (f" and {out_dir / REFIT_PREDICTIONS}" if (out_dir / REFIT_PREDICTIONS).exists() else "")
            + (": a new refit replaces it only once it finishes." if scheme is not None else "."))
    write_text(out_dir / PER_CLASS, per_class.to_csv(index=False))
    plot_confusion(out_dir, labels, val_pred, [shown(c) for c in classes], selection)
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    say(summary(manifest))
    if test_files:  # written before the refit, which may take hours or be interrupted
        test_scores = strategies.combine(selection.strategy, np.stack([c.test_logits for c in candidates]),
                                         selection.weights)
        write_predictions(out_dir / PREDICTIONS, test_files, test_scores.argmax(axis=1), classes, say)
        say(f"Predictions for {len(test_files)} test images: {out_dir / PREDICTIONS}")
    elif (out_dir / PREDICTIONS).exists():  # the new ensemble.json is in place: an older ensemble's predictions go
        (out_dir / PREDICTIONS).unlink()
    if scheme is not None:
        manifest["refit"] = refit_ensemble(run_dir, scheme, candidates, rows, gatherer=gatherer, budget_m=budget_m,
                                           strategy=strategy, metric=metric, cv_folds=cv_folds, min_gain=min_gain,
                                           data=data, storage=storage, out_dir=out_dir, say=say, **(refit_tune or {}))
        write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    if not test_files:
        raise EnsembleError(f"{shown(candidates[0].data_root)}/test has no images, so there is nothing to predict: {out_dir / MANIFEST} "
                            f"was written but not {PREDICTIONS}. Add images there, or predict any folder with "
                            f"`python -m ensemble.predict {out_dir} FOLDER`.")
    return manifest


def _earlier_refit(out_dir: Path) -> dict | None:
    """The `refit` section of the ensemble.json already in out_dir, if any (an unreadable file has none)."""
    try:
        earlier = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    refit = earlier.get("refit") if isinstance(earlier, dict) else None
    return refit if isinstance(refit, dict) else None


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


def _manifest(candidates, selection, worst: pd.DataFrame, gatherer: Gatherer, min_epochs: int, budget_m: float,
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
        "inference": asdict(gatherer.inference),
        "storage": gatherer.storage,
        "classes": candidates[0].classes,
        "min_image_side": candidates[0].config["min_image_side"],
        "selection": {**selection.method, "top_k": top_k, "min_epochs": min_epochs,
                      "candidates": [c.trial_id for c in candidates], "skipped": gatherer.skipped},
        "scores": {
            "members": [{"trial_id": c.trial_id, "param_count": c.param_count, **s, "scored_on": c.scored_on}
                        for c, s in zip(candidates, selection.members)],
            "strategies": selection.strategies,
        },
        "val_images": len(candidates[0].val_samples),
        "test_images": len(candidates[0].test_files),
        "worst_classes": worst.to_dict(orient="records"),
    }
