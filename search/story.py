"""What the search's three parts did, a line each, for the summary a finished search prints:

    TPE: 1 warm start, 4 random startup trials, 11 sampled from its model of the trials before them.
    Ensemble: softmax_average of 3 members (a1, b2, c3), cv_acc 0.9815 vs 0.9741 for the best member alone (+0.74
      points). Left out of the top 5: d4 (stopped by ASHA at epoch 2; candidates need 4).

(ASHA's line is the summary's `Trials:` line, search/outputs.py.) Each function returns None when its part has
nothing to say (no study, no ensemble.json); they read the files a run leaves, so a resumed or finished search
tells the same story.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from core.files import ENSEMBLE_MANIFEST as MANIFEST
from search.searcher import SAMPLED_BY


def tpe_line(study, startup_trials: int) -> str | None:
    """From the Optuna study's trials and what the searcher recorded as it asked each (search/searcher.py)."""
    trials = study.get_trials(deepcopy=False)
    kinds = Counter(t.user_attrs.get(SAMPLED_BY) for t in trials)
    if not trials or not (kinds["warm_start"] or kinds["random"] or kinds["tpe"]):
        return None
    text = (f"TPE: {_count(kinds['warm_start'], 'warm start')}, {_count(kinds['random'], 'random startup trial')}, "
            f"{kinds['tpe']} sampled from its model of the trials finished before them")
    if kinds["tpe"] * 2 < len(trials):
        text += (f"; it models only after {startup_trials} trials have finished: lower tpe_startup_trials (or run "
                 "more trials) for TPE to shape more of a search this size")
    return text + "."


def ensemble_line(run_dir: Path, table: pd.DataFrame, metric: str = "acc") -> str | None:
    """From ensemble.json and the leaderboard: the strategy and its members, its cross-validated score against its
    best member's, and which of the top-K trials were not candidates, and why."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    strategies, selection = manifest["scores"]["strategies"], manifest["selection"]
    chosen = manifest["strategy"]
    members = [m["trial_id"] for m in manifest["members"]]
    key = f"cv_{metric}"
    score = strategies[chosen]["cv"][metric]
    single = strategies["best_single"]["cv"][metric] if "best_single" in strategies else None
    text = f"Ensemble: {chosen} of {_count(len(members), 'member')} ({', '.join(members)}), {key} {score:.4f}"
    if single is not None and chosen != "best_single":
        text += f" vs {single:.4f} for the best member alone ({(score - single) * 100:+.2f} points)"
    elif single is not None:
        best_other = max((name for name in strategies if name != "best_single"),
                         key=lambda name: strategies[name]["cv"][metric], default=None)
        if best_other is not None:
            text += (f": no combination beat the best member in cross-validation on val (the best, {best_other}, "
                     f"scored {strategies[best_other]['cv'][metric]:.4f})")
    left = left_out(table, selection)
    if left:
        text += f". Left out of the top {selection['top_k']}: " + "; ".join(left)
    return text + "."


def left_out(table: pd.DataFrame, selection: dict) -> list[str]:
    """The top_k ranked trials that were not ensemble candidates, each with the reason."""
    candidates = set(selection.get("candidates", []))
    skipped = {entry.get("trial_id"): entry.get("reason", "no loadable checkpoint")
               for entry in selection.get("skipped", []) if isinstance(entry, dict)}
    need = selection.get("min_epochs")
    reasons = []
    for _, row in table.sort_values("rank").head(selection.get("top_k", 5)).iterrows():
        trial = row["trial_id"]
        if trial in candidates:
            continue
        if trial in skipped:
            why = skipped[trial]
        elif row["status"] == "failed":
            why = "failed"
        elif need is not None and row["epochs"] < need:
            how = "stopped by ASHA" if row["status"] == "stopped_early" else str(row["status"])
            why = f"{how} at epoch {int(row['epochs'])}; candidates need {need} (--min-epochs)"
        else:
            why = str(row["status"])
        reasons.append(f"{trial} ({why})")
    return reasons


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
