"""How member predictions combine into an ensemble, and how one is chosen on validation.

Pure numpy: logits in, weights and scores out (no models, no files, no Ray).

    logits   float array [M, N, C]: M members, N images, C classes
    labels   int array [N]
    weights  float array [M], summing to 1; a zero weight means "not in the ensemble"

Every strategy is fitted under a parameter budget: the summed parameter count of the *distinct*
members with a non-zero weight stays <= budget, however often Caruana's selection repeats a member.
The best ensemble is searched for within the budget (never the best one truncated to fit).

Validation sets are small (3 images per class in some reports), so picking the strategy and members
that score best on them overfits. `select_ensemble` therefore compares strategies by stratified
k-fold cross-validation on the validation set: each fold is predicted by the members and weights
chosen on the other folds, and the strategy whose out-of-fold predictions score best wins; it is then
refitted on the whole validation set. `min_gain` additionally makes every member beyond the first pay
for itself: an ensemble's objective is its metric minus min_gain per extra distinct member.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

STRATEGIES = ("best_single", "softmax_average", "logit_average", "majority_vote", "caruana")
SUBSET_STRATEGIES = ("softmax_average", "logit_average", "majority_vote")  # uniform weights over a subset
METRICS = ("acc", "macro_f1")
EXHAUSTIVE_MAX_MEMBERS = 8  # 2^8 - 1 = 255 subsets per fit; beyond that, greedy forward selection


# ------------------------------------------------------------------------------------ combination

def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def combine(strategy: str, logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ensemble scores [N, C]: the prediction is their argmax."""
    return combine_with_probs(strategy, logits, weights)[0]


def combine_with_probs(strategy: str, logits: np.ndarray, weights: np.ndarray,
                       probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], class probabilities [N, C]); the probabilities feed the log-loss tie-breaker, and a
    vote's are its voters' mean softmax. `probs` = softmax(logits), when the caller has it already."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}.")
    w = np.asarray(weights, dtype=np.float64)
    active = np.flatnonzero(w)  # members with weight 0 cost nothing
    w = w[active] / w[active].sum()
    if strategy == "logit_average":
        scores = np.tensordot(w, logits[active], axes=1)
        return scores, softmax(scores)
    member_probs = softmax(logits[active]) if probs is None else probs[active]
    if strategy == "majority_vote":  # one vote per member in the ensemble, whatever its weight
        return vote_scores(logits[active], member_probs), member_probs.mean(axis=0)
    mean = np.tensordot(w, member_probs, axes=1)  # softmax_average, caruana, best_single
    return mean, mean


def vote_scores(logits: np.ndarray, probs: np.ndarray | None = None) -> np.ndarray:
    """One vote per member; ties broken by the summed softmax of all voters.

    votes + softmax_sum / (M + 1): the tie-breaker is < 1, so it never outweighs a whole vote.
    """
    m, _, c = logits.shape
    probs = softmax(logits) if probs is None else probs
    votes = np.eye(c)[logits.argmax(axis=-1)].sum(axis=0)
    return votes + probs.sum(axis=0) / (m + 1)


# ---------------------------------------------------------------------------------------- metrics

def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean())


def macro_f1(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """sklearn's f1_score(average="macro", labels=range(C), zero_division=0), without its overhead."""
    tp = np.bincount(labels[pred == labels], minlength=num_classes)
    predicted = np.bincount(pred, minlength=num_classes)
    actual = np.bincount(labels, minlength=num_classes)
    denominator = predicted + actual  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return float(f1.mean())


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def metric_value(metric: str, pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    if metric == "acc":
        return accuracy(pred, labels)
    if metric == "macro_f1":
        return macro_f1(pred, labels, num_classes)
    raise ValueError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}.")


# --------------------------------------------------------------------------------------- fitting

@dataclass(frozen=True)
class Problem:
    """What every fit sees: member logits on (a part of) validation, and the rules."""

    logits: np.ndarray
    labels: np.ndarray
    param_counts: np.ndarray
    budget: float
    metric: str = "acc"
    min_gain: float = 0.0
    max_rounds: int = 25  # Caruana's additions

    @cached_property
    def probs(self) -> np.ndarray:
        return softmax(self.logits)  # once per problem, not once per candidate ensemble

    @property
    def num_members(self) -> int:
        return self.logits.shape[0]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[2]

    def rows(self, index: np.ndarray) -> "Problem":
        return Problem(self.logits[:, index], self.labels[index], self.param_counts, self.budget, self.metric,
                       self.min_gain, self.max_rounds)

    def params_of(self, members) -> float:
        return float(self.param_counts[list(members)].sum())

    def affordable(self, members) -> bool:
        return self.params_of(members) <= self.budget

    def objective(self, strategy: str, weights: np.ndarray) -> tuple[float, float]:
        """(metric - min_gain per extra distinct member, -log-loss), compared lexicographically.

        The log-loss only separates ensembles whose metric ties: accuracy moves in steps of 1/N.
        """
        scores, probs = self.predict(strategy, weights)
        value = metric_value(self.metric, scores.argmax(axis=1), self.labels, self.num_classes)
        extra_members = int((weights > 0).sum()) - 1
        return value - self.min_gain * extra_members, -log_loss(probs, self.labels)

    def predict(self, strategy: str, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return combine_with_probs(strategy, self.logits, weights, self.probs)


def uniform_weights(members, num_members: int) -> np.ndarray:
    w = np.zeros(num_members)
    w[list(members)] = 1.0 / len(members)
    return w


def fit_subset(problem: Problem, strategy: str) -> np.ndarray:
    """The affordable subset (uniform weights) with the best objective: exhaustive for small M, else greedy."""
    m = problem.num_members
    if m > EXHAUSTIVE_MAX_MEMBERS:
        return _greedy_subset(problem, strategy)
    subsets = [s for size in range(1, m + 1) for s in itertools.combinations(range(m), size)]
    return _best_subset(problem, strategy, subsets)


def _best_subset(problem: Problem, strategy: str, subsets) -> np.ndarray:
    best_key, best = None, None
    for subset in subsets:
        if not problem.affordable(subset):
            continue
        weights = uniform_weights(subset, problem.num_members)
        # Ties go to the cheaper ensemble.
        key = (*problem.objective(strategy, weights), -problem.params_of(subset))
        if best_key is None or key > best_key:
            best_key, best = key, weights
    if best is None:
        raise ValueError(f"No member fits the budget of {problem.budget:g} parameters "
                         f"(smallest: {problem.param_counts.min():g}).")
    return best


def _greedy_subset(problem: Problem, strategy: str) -> np.ndarray:
    """Forward selection without replacement: add the best affordable member while the objective improves."""
    chosen: list[int] = []
    current = (-np.inf, -np.inf)
    while True:
        options = [i for i in range(problem.num_members) if i not in chosen and problem.affordable(chosen + [i])]
        scored = [(problem.objective(strategy, uniform_weights(chosen + [i], problem.num_members)), i)
                  for i in options]
        if not scored:
            break
        key, i = max(scored, key=lambda pair: pair[0])
        if key <= current:
            break
        chosen.append(i)
        current = key
    if not chosen:
        raise ValueError(f"No member fits the budget of {problem.budget:g} parameters.")
    return uniform_weights(chosen, problem.num_members)


def fit_caruana(problem: Problem) -> np.ndarray:
    """Greedy forward selection with replacement (Caruana et al. 2004) over the averaged softmax.

    Start empty; repeatedly add the member (repeats allowed) whose addition gives the best objective,
    as long as the objective improves and the distinct members stay within the budget. A repeat
    costs no parameters. Weights = selection counts / total selections.
    """
    counts = np.zeros(problem.num_members)
    current = (-np.inf, -np.inf)
    for _ in range(problem.max_rounds):
        in_ensemble = set(np.flatnonzero(counts))
        options = [i for i in range(problem.num_members) if problem.affordable(in_ensemble | {i})]
        if not options:
            break
        scored = []
        for i in options:
            trial = counts.copy()
            trial[i] += 1
            scored.append((problem.objective("caruana", trial / trial.sum()), i))
        key, i = max(scored, key=lambda pair: pair[0])  # first best on ties: a stable, seed-free order
        if key <= current:
            break
        counts[i] += 1
        current = key
    if not counts.any():
        raise ValueError(f"No member fits the budget of {problem.budget:g} parameters.")
    return counts / counts.sum()


def fit(problem: Problem, strategy: str) -> np.ndarray:
    """The weights `strategy` chooses on `problem`'s rows."""
    if strategy == "best_single":
        return _best_subset(problem, strategy, [(i,) for i in range(problem.num_members)])
    if strategy == "caruana":
        return fit_caruana(problem)
    if strategy in SUBSET_STRATEGIES:
        return fit_subset(problem, strategy)
    raise ValueError(f"Unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}.")


# ------------------------------------------------------------------------------ cross-validation

def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold id per row: each class's rows shuffled and dealt round-robin, continuing where the last class
    stopped, so folds stay balanced in size even with 1-3 images per class."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    position = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        folds[rows] = (position + np.arange(len(rows))) % k
        position += len(rows)
    return folds


def out_of_fold_scores(problem: Problem, strategy: str, folds: np.ndarray) -> dict:
    """Each fold predicted by the ensemble fitted on the other folds; metrics over all rows pooled
    (per-fold macro-F1 on a handful of images per class would be mostly noise)."""
    n, c = problem.labels.shape[0], problem.num_classes
    pred = np.empty(n, dtype=int)
    probs = np.empty((n, c))
    for k in np.unique(folds):
        held_out, rest = folds == k, folds != k
        weights = fit(problem.rows(rest), strategy)
        scores, fold_probs = problem.rows(held_out).predict(strategy, weights)
        pred[held_out] = scores.argmax(axis=1)
        probs[held_out] = fold_probs
    return {"acc": accuracy(pred, problem.labels), "macro_f1": macro_f1(pred, problem.labels, c),
            "log_loss": log_loss(probs, problem.labels)}


# ------------------------------------------------------------------------------------- selection

@dataclass
class Selection:
    strategy: str
    weights: np.ndarray
    members: list[dict]                       # every candidate alone on the whole validation set
    strategies: dict[str, dict]               # every strategy: fitted on all of val, and its CV score
    method: dict = field(default_factory=dict)


def score_weights(problem: Problem, strategy: str, weights: np.ndarray) -> dict:
    scores, probs = problem.predict(strategy, weights)
    pred = scores.argmax(axis=1)
    return {"acc": accuracy(pred, problem.labels),
            "macro_f1": macro_f1(pred, problem.labels, problem.num_classes),
            "log_loss": log_loss(probs, problem.labels)}


def select_ensemble(logits: np.ndarray, labels: np.ndarray, param_counts, *, budget: float,
                    strategy: str = "auto", metric: str = "acc", cv_folds: int = 5, min_gain: float = 0.0,
                    max_rounds: int = 25, seed: int = 0) -> Selection:
    """Fit every strategy under the budget, score it by cross-validation on val, keep the best.

    strategy="auto" picks by out-of-fold `metric` (ties: the simpler strategy, in STRATEGIES order);
    a named strategy is fitted as asked, and every strategy is still reported.
    """
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; known: auto, {', '.join(STRATEGIES)}.")
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}.")
    problem = Problem(np.asarray(logits, dtype=np.float64), np.asarray(labels), np.asarray(param_counts, float),
                      float(budget), metric, float(min_gain), int(max_rounds))
    k = min(cv_folds, len(labels))
    folds = stratified_folds(problem.labels, k, seed) if k >= 2 else None

    members = [score_weights(problem, "best_single", np.eye(problem.num_members)[i])
               for i in range(problem.num_members)]
    fitted, report = {}, {}
    for name in STRATEGIES:
        fitted[name] = fit(problem, name)
        report[name] = {"val": score_weights(problem, name, fitted[name]),
                        "members": int((fitted[name] > 0).sum()),
                        "params": problem.params_of(np.flatnonzero(fitted[name]))}
        if folds is not None:
            report[name]["cv"] = out_of_fold_scores(problem, name, folds)

    chosen = strategy if strategy != "auto" else _pick(report, metric)
    method = {"metric": metric, "min_gain": min_gain, "budget": budget, "max_rounds": max_rounds,
              "cv_folds": k if folds is not None else 0, "seed": seed,
              "picked_by": ("given" if strategy != "auto" else
                            f"out-of-fold {metric}, {k}-fold stratified CV on val" if folds is not None else
                            f"{metric} on all of val (too few images to cross-validate)")}
    return Selection(chosen, fitted[chosen], members, report, method)


def _pick(report: dict, metric: str) -> str:
    basis = "cv" if all("cv" in r for r in report.values()) else "val"
    # max() keeps the first of equals: STRATEGIES runs from simplest to most flexible.
    return max(STRATEGIES, key=lambda name: report[name][basis][metric])
