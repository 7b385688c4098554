"""Where `python -m ensemble` writes: the search's own ensemble is RUN/ensemble.json and RUN/prediction.csv; an
ensemble with other options (--top-k 8, --tta, ...) goes beside it, to RUN/ensembles/<tag>/ (or --out DIR), so
that no command silently replaces what the search wrote. `python -m ensemble RUN` with no options rebuilds the
search's own.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.files import PLAN_FILE

ENSEMBLES_DIR = "ensembles"
# The options that change which ensemble is built, with the search's defaults (search/execute.py's call).
DEFAULTS = {"top_k": 5, "min_epochs": None, "budget_m": 100.0, "tta": False, "tta_size": None, "strategy": "auto",
            "metric": "acc", "cv_folds": 5, "min_gain": 0.0}


def search_options(run_dir: Path) -> dict:
    """The options the search's own ensemble is built with: its --ensemble-top-k and parameter budget."""
    try:
        plan = json.loads((Path(run_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        plan = {}
    plan = plan if isinstance(plan, dict) else {}
    trial = ((plan.get("settings") or {}).get("trial") or {}) if isinstance(plan.get("settings"), dict) else {}
    top_k = plan.get("ensemble_top_k")
    return {**DEFAULTS, "top_k": top_k if isinstance(top_k, int) and top_k > 0 else DEFAULTS["top_k"],
            "budget_m": float(trial.get("param_budget_m", DEFAULTS["budget_m"]))}


def resolve(run_dir: Path, given: dict, out: Path | None) -> tuple[dict, Path, str | None]:
    """(the options to build with, the folder to write to, a line saying where, or None for the search's own).
    `given`: the command line's values, None where not given (the search's own value then)."""
    own = search_options(run_dir)
    options = {key: (given.get(key) if given.get(key) is not None else own[key]) for key in DEFAULTS}
    differ = {key: value for key, value in options.items() if value != own[key]}
    if out is None and not differ:
        return options, Path(run_dir), None
    folder = Path(out).expanduser().absolute() if out is not None else Path(run_dir) / ENSEMBLES_DIR / tag(differ)
    shown = ", ".join(f"{key} {value}" if value is not True else key for key, value in differ.items()) or "--out"
    return options, folder, (f"Options other than the search's own ({shown}): this ensemble is written to {folder}; "
                             f"the search's {Path(run_dir) / 'ensemble.json'} and prediction.csv are untouched.")


def tag(differ: dict) -> str:
    """top_k8-tta-tta_size320: the options that differ, in a folder name."""
    parts = [key if value is True else f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"
             for key, value in differ.items()]
    return "-".join(parts).replace("/", "_") or "default"
