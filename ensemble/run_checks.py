"""What `python -m ensemble` checks of the run before it builds anything: that the search has ended (the
search itself withholds its ensemble until every trial has), unless --partial asks for the trials so far,
and that the dataset is the one the search's plan fingerprinted (core/data_fingerprint.py).
Driver side: no torch."""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import EnsembleError
from core.files import PLAN_FILE
from core.trial_status import TrialStatus
from ensemble.candidates import read_leaderboard


def check_run_ready(run_dir: Path, *, partial: bool = False, data: str | None = None) -> None:
    run_dir = Path(run_dir)
    try:
        plan = json.loads((run_dir / PLAN_FILE).read_text())
        num_samples = int(plan["settings"]["num_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # a run without a readable plan (an older one, or hand-made): build_ensemble says what it lacks
    _check_dataset(plan, data)
    if not (run_dir / "leaderboard.csv").is_file():
        return
    table = read_leaderboard(run_dir)
    known = {status.value for status in TrialStatus}
    ended = sum(TrialStatus(status).ended for status in table["status"] if status in known)
    unfinished = num_samples - ended
    if unfinished > 0 and not partial:
        storage = plan.get("storage")
        storage_flag = f" --storage '{storage}'" if isinstance(storage, str) and "://" in storage else ""
        raise EnsembleError(f"The search {run_dir.name!r} has {unfinished} of its {num_samples} trial(s) not run or "
                            f"not finished, so its ensemble waits (as the search's own does). Resume it first: "
                            f"python search/run.py --name {run_dir.name} --resume{storage_flag}; or pass --partial to "
                            "ensemble the trials that finished so far.")


def _check_dataset(plan: dict, data: str | None) -> None:
    from core.data import index_dataset, resolve_data_root
    from core.data_fingerprint import check_fingerprint

    recorded, spec = plan.get("data_fingerprint"), data or plan.get("data")
    if not recorded or not isinstance(spec, str):
        return
    settings = plan.get("settings") or {}
    trial = settings.get("trial") or {}
    index = index_dataset(resolve_data_root(spec), val_fraction=trial.get("val_fraction", 0.1),
                          seed=settings.get("seed", 0), min_image_side=trial.get("min_image_side", 8),
                          warn=lambda _: None)
    check_fingerprint(recorded, index, who="python -m ensemble",
                      fix="Its members were scored and chosen on the data as it was: restore it (or give its copy "
                          "with --data); nothing was written.")
