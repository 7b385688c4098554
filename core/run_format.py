"""The version of what a run folder holds (plan.json, leaderboard, the Tune experiment, ensemble.json).

One number for all of it, recorded in every run's plan.json. A command that reads a run (--resume, the
ensemble, predict, the report) refuses one written in another format with one message, instead of carrying
shims for every older layout. Bump it when a file changes shape or a pickled name moves: Ray Tune pickles
the trainable by its module path (worker.tune_trial.tune_trial) into every experiment, so moving it means an
older experiment can no longer be restored.

    1  up to 2026-12: the trainable was search.tune_reporter.tune_trial, no format field
    2  core/, worker/ and compat/ packages; trial key `metric` (was checkpoint_metric)
"""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import UserError
from core.files import PLAN_FILE

FORMAT = 2
KEY = "results_format"


class RunFormatError(UserError):
    pass


def check_format(record: dict, where: Path, what: str = "this run") -> None:
    """Raise RunFormatError unless `record` (a run's plan.json) was written in FORMAT."""
    found = record.get(KEY, 1) if isinstance(record, dict) else 1
    if found != FORMAT:
        raise RunFormatError(
            f"{where} was written by {'an older' if isinstance(found, int) and found < FORMAT else 'another'} "
            f"version of resnet-search (results format {found}; this version reads format {FORMAT}), so {what} "
            "cannot be continued or read here. Start a new search with this version, or check out the commit "
            "its provenance.json names to use it.")


def check_run_folder(run_dir: Path, what: str) -> None:
    """For commands that read a search's results folder (the ensemble, predict, the report): refuse a folder whose
    plan.json is in another format. A folder without one (a leaderboard made by hand, say) is read as it is."""
    path = Path(run_dir) / PLAN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    check_format(record, Path(run_dir), what)
