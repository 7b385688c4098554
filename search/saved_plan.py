"""results/<name>/plan.json: the plan as resolved when the search started, so that --resume continues that
search, not the space file's defaults.

It holds every search setting after the command line's overrides (--num-samples, --seed, --cpus-per-trial,
--smoke-test, ...), the data every trial receives, storage, address, ensemble_top_k and refit; the space's
define() and warm starts come from the run's copy of the space file (results/<name>/space.py).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.atomic import write_text
from core.errors import UserError
from core.files import PLAN_FILE
from core.run_format import FORMAT, KEY, check_format


def write_saved_plan(plan, *, smoke_test: bool) -> Path:
    record = {
        KEY: FORMAT,
        "name": plan.name,
        "space_file": str(plan.space.path),  # where it came from; the run's copy is space.py beside this file
        "settings": dataclasses.asdict(plan.space.settings),
        "smoke_test": smoke_test,
        "data": plan.data,
        "storage": plan.storage,
        "address": plan.address,
        "ensemble_top_k": plan.ensemble_top_k,
        "refit": plan.refit,
        "data_fingerprint": getattr(plan, "data_fingerprint", ""),
    }
    path = plan.out_dir / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(record, indent=2, sort_keys=True))  # never half a plan: --resume reads it


def read_saved_plan(out_dir: Path) -> dict | None:
    """The saved plan, or None when there is none; refuses one written in another results format."""
    path = out_dir / PLAN_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} cannot be read ({err}); it records how this search was started. "
                        f"Restore it from a backup, or start a new search under another --name.") from None
    check_format(record, path.parent, "this search")
    if not isinstance(record, dict) or "settings" not in record:
        raise UserError(f"{path} is not a search plan (no settings). Start a new search under another --name.")
    return record
