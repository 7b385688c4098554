"""Refit the ensemble's candidates on train+val, as the seed reports did for their last points:

    --refit kfold:K   each candidate's config trained K times, model k on train+val minus fold k (stratified,
                      seeded), validated on fold k: every pooled image is predicted by exactly one model of
                      each candidate, never one that trained on it (out-of-fold, OOF)
    --refit bag:N     N bootstrap bags of train+val per candidate; each image is predicted by the models whose
                      bag did not draw it (out-of-bag); images every bag drew have no such prediction

Each model runs the epochs its candidate's trial reached its best at (leaderboard best_epoch) as a full
schedule of that length, and is used as trained (its last epoch: picking its best epoch on its own held-out
fold would make the OOF scores optimistic). The models train as Ray Tune trials (ensemble/refit_trials.py),
are scored like any member (worker/scoring.py, in tasks with the trials' resources), and then:

  - a candidate's prediction is the mean softmax of its K (N) models, on OOF images and on DATA/test;
  - the ensemble's members and weights are chosen on the OOF predictions of all candidates with the same
    selection as the plain ensemble (ensemble/strategies.py: every strategy, picked by cross-validation);
  - test predictions go to prediction_refit.csv (prediction.csv stays the plain ensemble's), the OOF and
    test probabilities to refit/<tag>-oof.npz, and everything to the `refit` section of ensemble.json.

A candidate's parameter count in the budget is that of all its K (N) models: they all run at inference.
Driver side: numpy and pandas; no torch.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import write_bytes
from ensemble import strategies
from core.errors import EnsembleError
from core.files import REFIT_DIR, REFIT_PREDICTIONS
from ensemble.candidates import Candidate
from ensemble.report import write_predictions
from core.storage import join_uri
from core.subsets import SCHEMES, SubsetError, parse_scheme_parts

_PROB_FLOOR = 1e-12                 # log of a mean softmax: a class no model gives any mass stays finite


@dataclass(frozen=True)
class RefitScheme:
    scheme: str  # "kfold" or "bag"
    count: int

    @classmethod
    def parse(cls, text: str) -> "RefitScheme":
        try:
            return cls(*parse_scheme_parts(str(text), with_part=False))
        except SubsetError as err:
            raise EnsembleError(f"--refit {err}") from None

    @property
    def tag(self) -> str:
        return f"{self.scheme}{self.count}"

    def model_name(self, trial_id: str, part: int) -> str:
        return f"{trial_id}-{'fold' if self.scheme == 'kfold' else 'bag'}{part}"

    def __str__(self) -> str:
        return f"{self.scheme}:{self.count}"


def refit_storage(run_dir: Path, storage: str | None) -> str:
    """Where the search's experiment lives: STORAGE/<name>, or the run folder itself for local storage."""
    return join_uri(storage, run_dir.name) if storage else str(Path(run_dir).resolve())


def plan_jobs(candidates: list[Candidate], best_epochs: dict[str, int], scheme: RefitScheme, seed: int,
              data: str | None) -> list[dict]:
    """One job per (candidate, fold or bag): the candidate's own config as its trial ran, on that subset, for
    its best_epoch epochs, checkpointed on the usual cadence and at its last epoch."""
    jobs = []
    for candidate in candidates:
        for part in range(scheme.count):
            config = {**candidate.config, "epochs": best_epochs[candidate.trial_id],
                      "subset": f"{scheme.scheme}:{scheme.count}:{part}", "subset_seed": seed,
                      "checkpoint_new_bests": False, **({"data": data} if data else {})}
            jobs.append({"name": scheme.model_name(candidate.trial_id, part), "source": candidate.trial_id,
                         "part": part, "config": config})
    return json.loads(json.dumps(jobs))  # plain JSON types: compared with the recorded plan on resume


def best_epochs_of(rows: pd.DataFrame, candidates: list[Candidate]) -> dict[str, int]:
    if "best_epoch" not in rows:
        raise EnsembleError("leaderboard.csv has no best_epoch column, which --refit needs (how many epochs each "
                            "model trains); rebuild the leaderboard with this version's search.")
    epochs = dict(zip(rows["trial_id"], rows["best_epoch"]))
    bad = [c.trial_id for c in candidates if not (pd.notna(epochs.get(c.trial_id)) and int(epochs[c.trial_id]) >= 1)]
    if bad:
        raise EnsembleError(f"Trial(s) {', '.join(bad)} have no best_epoch >= 1 in leaderboard.csv; --refit "
                            "cannot tell how long to train them.")
    return {c.trial_id: int(epochs[c.trial_id]) for c in candidates}


def refit_ensemble(run_dir: Path, scheme: RefitScheme, candidates: list[Candidate], rows: pd.DataFrame, *,
                   gatherer, budget_m: float, strategy: str, metric: str, cv_folds: int, min_gain: float,
                   data: str | None, storage: str | None, max_failures: int = 2, max_concurrent: int | None = None,
                   callbacks=(), out_dir: Path | None = None, say=print) -> dict:
    """Train (or resume) the refit, choose its ensemble on OOF predictions, write prediction_refit.csv;
    returns ensemble.json's `refit` section. `gatherer`: the plain ensemble's, which scores the models.
    out_dir: where its files go (default run_dir); an ensemble with other options than the search's
    (ensemble/__main__.py) keeps its refit models in an experiment of their own, refit-<tag>-<out_dir's name>."""
    from ensemble.refit_trials import run_refit_trials

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    seed = int(candidates[0].config["seed"])
    jobs = plan_jobs(candidates, best_epochs_of(rows, candidates), scheme, seed, data)
    storage_path = refit_storage(run_dir, storage)
    name = f"refit-{scheme.tag}" + ("" if out_dir.resolve() == run_dir.resolve() else f"-{out_dir.name}")
    checkpoints = run_refit_trials(jobs, storage_path=storage_path, name=name, resources=gatherer.runner.resources,
                                   plan_file=out_dir / REFIT_DIR / f"{scheme.tag}-plan.json",
                                   max_failures=max_failures, max_concurrent=max_concurrent, callbacks=callbacks,
                                   continue_hint=_continue_hint(run_dir, scheme, candidates, data, storage), say=say)

    gatherer.skipped = []
    scored = gatherer.gather(pd.DataFrame({"trial_id": [job["name"] for job in jobs],
                                           "best_checkpoint": [checkpoints[job["name"]] for job in jobs]}))
    if gatherer.skipped:
        raise EnsembleError(f"{len(gatherer.skipped)} refit model(s) could not be scored (see above); delete "
                            f"{join_uri(storage_path, name)} to train them again.")
    models = {model.trial_id: model for model in scored}
    pooled = [tuple(s) for s in gatherer.runner.lists([(candidates[0].config, data)])[0]["pooled_samples"]]
    labels = np.array([label for _, label in pooled])

    oof_probs, counts, test_probs, per_model = [], [], [], []
    for candidate in candidates:
        own = [models[job["name"]] for job in jobs if job["source"] == candidate.trial_id]
        probs, count = _out_of_fold(own, pooled)
        oof_probs.append(probs)
        counts.append(count)
        test_probs.append(np.mean([strategies.softmax(m.test_logits.astype(np.float64)) for m in own], axis=0))
        per_model.append(own)
    counts = np.stack(counts)
    if scheme.scheme == "kfold" and not (counts == 1).all():
        raise EnsembleError(f"The kfold models of a candidate do not predict every pooled image exactly once "
                            f"({int((counts != 1).sum())} exceptions); the dataset changed since the refit "
                            f"trained: delete {join_uri(storage_path, name)} and refit again.")
    covered = (counts > 0).all(axis=0)  # bags: the images every candidate has an out-of-bag prediction for
    if not covered.any():
        raise EnsembleError(f"No image is out of bag for every candidate; use more bags than {scheme.count}.")
    oof_logits = np.log(np.clip(np.stack(oof_probs)[:, covered], _PROB_FLOOR, None))
    test_logits = np.log(np.clip(np.stack(test_probs), _PROB_FLOOR, None))

    # Every model of a candidate runs at inference: its parameters count that many times.
    param_counts = [len(own) * own[0].param_count for own in per_model]
    budget = budget_m * 1e6
    if min(param_counts) > budget:
        raise EnsembleError(f"No refit candidate fits the {budget_m:g}M parameter budget: each counts all its "
                            f"{scheme.count} models, the smallest {min(param_counts) / 1e6:.2f}M. Raise --budget-m "
                            "or refit with fewer folds / bags.")
    selection = strategies.select_ensemble(oof_logits, labels[covered], param_counts, budget=budget,
                                           strategy=strategy, metric=metric, cv_folds=cv_folds, min_gain=min_gain)

    test_files = candidates[0].test_files
    oof_file = out_dir / REFIT_DIR / f"{scheme.tag}-oof.npz"
    buffer = io.BytesIO()
    np.savez(buffer, members=np.array([c.trial_id for c in candidates]), paths=np.array([p for p, _ in pooled]),
             labels=labels, oof_probs=np.stack(oof_probs), counts=counts, covered=covered,
             test_files=np.array(test_files, dtype=str), test_probs=np.stack(test_probs))
    oof_file.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(oof_file, buffer.getvalue())
    prediction = None
    if test_files:
        test_scores = strategies.combine(selection.strategy, test_logits, selection.weights)
        prediction = out_dir / REFIT_PREDICTIONS
        write_predictions(prediction, test_files, test_scores.argmax(axis=1), candidates[0].classes, say)
    section = _section(scheme, seed, candidates, per_model, selection, jobs, join_uri(storage_path, name),
                       pooled, covered, oof_file, prediction, test_files)
    say(summary(section))
    return section


def _continue_hint(run_dir: Path, scheme: RefitScheme, candidates: list[Candidate], data: str | None,
                   storage: str | None) -> str:
    """The ensemble command that continues this refit, for when it ran at the end of a search (whose own
    command would start another search): same candidates, data and storage."""
    options = [f"--top-k {len(candidates)}", f"--refit {scheme}"] + ([f"--data {data}"] if data else []) + (
        [f"--storage '{storage}'"] if storage else [])
    return f", or `python -m ensemble {run_dir} {' '.join(options)}`"


def _out_of_fold(models: list[Candidate], pooled: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [N, C] over the models that held each pooled image out, how many did [N])."""
    row = {path: i for i, (path, _) in enumerate(pooled)}
    sums = np.zeros((len(pooled), models[0].val_logits.shape[1]))
    counts = np.zeros(len(pooled), dtype=int)
    for model in models:
        unknown = [p for p, _ in model.val_samples if p not in row]
        if unknown:
            raise EnsembleError(f"Refit model {model.trial_id} was validated on {len(unknown)} image(s) outside "
                                f"train+val (first: {unknown[0]}); the dataset changed since it trained.")
        rows = np.array([row[p] for p, _ in model.val_samples], dtype=int)
        np.add.at(sums, rows, strategies.softmax(model.val_logits.astype(np.float64)))
        np.add.at(counts, rows, 1)
    return np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0), counts


def _section(scheme, seed, candidates, per_model, selection, jobs, experiment, pooled, covered, oof_file, prediction,
             test_files) -> dict:
    epochs = {job["source"]: job["config"]["epochs"] for job in jobs}
    members = []
    for candidate, own, alone, weight in zip(candidates, per_model, selection.members, selection.weights):
        members.append({
            "trial_id": candidate.trial_id, "backbone": candidate.config["backbone"], "epochs": epochs[candidate.trial_id],
            "weight": float(weight), "param_count": len(own) * own[0].param_count,
            "oof_acc": alone["acc"], "oof_macro_f1": alone["macro_f1"],
            "models": [{"model": m.trial_id, "subset": m.config["subset"], "checkpoint": m.checkpoint,
                        "val_images": len(m.val_samples), **_scores(m)} for m in own],
        })
    chosen = [m for m in members if m["weight"] > 0]
    return {
        "scheme": scheme.scheme, scheme_count_key(scheme): scheme.count, "subset_seed": seed,
        "strategy": selection.strategy,
        "members": members,
        "param_total": sum(m["param_count"] for m in chosen),
        "selection": {**selection.method, "on": "out-of-fold predictions" if scheme.scheme == "kfold"
                      else "out-of-bag predictions"},
        "strategies": selection.strategies,
        "pooled_images": len(pooled), "oof_images": int(covered.sum()), "test_images": len(test_files),
        "experiment": experiment, "oof_file": str(oof_file), "predictions": str(prediction) if prediction else None,
    }


def scheme_count_key(scheme: RefitScheme) -> str:
    return SCHEMES[scheme.scheme]  # "folds" or "bags"


def _scores(model: Candidate) -> dict:
    labels = np.array([label for _, label in model.val_samples])
    pred = model.val_logits.argmax(axis=1)
    return {"val_acc": strategies.accuracy(pred, labels),
            "val_macro_f1": strategies.macro_f1(pred, labels, model.val_logits.shape[1])}


def summary(section: dict) -> str:
    rows = {m["trial_id"]: {"epochs": m["epochs"], "models": len(m["models"]), "params_m": m["param_count"] / 1e6,
                            "oof_acc": m["oof_acc"], "oof_macro_f1": m["oof_macro_f1"], "weight": m["weight"]}
            for m in section["members"]}
    chosen = section["strategies"][section["strategy"]]
    honest = chosen.get("cv", chosen["val"])
    return "\n".join([
        f"Refit {section['scheme']}:{section[SCHEMES[section['scheme']]]} on {section['oof_images']} of "
        f"{section['pooled_images']} train+val images ({section['selection']['on']}):",
        pd.DataFrame.from_dict(rows, orient="index").to_string(float_format="%.4f"),
        f"Refit ensemble: {section['strategy']}, acc {honest['acc']:.4f}, macro-F1 {honest['macro_f1']:.4f} "
        f"({'cross-validated on the OOF predictions' if 'cv' in chosen else 'on the OOF predictions'}); "
        f"{section['param_total'] / 1e6:.2f}M parameters."
        + (f" Predictions: {section['predictions']}" if section["predictions"] else ""),
    ])
