"""What a run folder holds before a search starts in it, and owning it while the search runs.

A folder is one of:
  - absent, or holding only the run lock: free;
  - a start that never reached Tune's first state (only space.py, provenance.json, plan.json and a study with
    no trial asked: e.g. a searcher that failed in its constructor, a crash right after the start): a fresh
    start with the same --name reuses it, its leftovers moved into abandoned-<time>/ (nothing is deleted);
  - anything else: a run, never overwritten (the plan gives the --resume command).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from core.files import PLAN_FILE, PROVENANCE_FILE, SPACE_COPY, STUDY_FILE
from core.run_lock import RunLock, lock_files

START_FILES = {SPACE_COPY, PROVENANCE_FILE, PLAN_FILE, STUDY_FILE}


def written(out_dir: Path) -> set[str]:
    """The names in out_dir besides the lock's."""
    if not Path(out_dir).is_dir():
        return set()
    return {p.name for p in Path(out_dir).iterdir()} - lock_files()


def never_started(out_dir: Path) -> bool:
    """A folder a start left before Tune's first state: only start files, and no trial asked in its study."""
    names = written(out_dir)
    return bool(names) and names <= START_FILES and not _study_has_trials(Path(out_dir) / STUDY_FILE)


def _study_has_trials(path: Path) -> bool:
    # JournalStorage: one JSON line per operation. A trial was asked when one was created in a state other than
    # WAITING (4: an enqueued warm start) or set to a state (op 6). Read as text: the driver's plan loads no Optuna.
    if not path.is_file():
        return False
    import json

    for line in path.read_text(errors="replace").splitlines():
        try:
            op = json.loads(line)
            if op.get("op_code") == 6 or (op.get("op_code") == 4 and op.get("state", 0) != 4):
                return True
        except (ValueError, AttributeError):
            return True  # unreadable: treat as a run, never reuse it
    return False


def set_aside_abandoned_start(out_dir: Path, say=print) -> Path | None:
    """Moves a never-started folder's leftovers into abandoned-<time>/ so the new start begins clean."""
    names = written(out_dir)
    if not names:
        return None
    aside = Path(out_dir) / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for name in sorted(names):
        (Path(out_dir) / name).rename(aside / name)
    say(f"Note: {out_dir} held only the files of a start that never reached its first trial; they are kept in "
        f"{aside} and the search starts afresh.")
    return aside


@contextmanager
def owned(plan):
    """The search's run lock, held from before anything is written until the search exits."""
    bucket = plan.experiment_path if plan.storage_uri.is_cloud else None
    with RunLock(plan.out_dir, bucket=bucket, what="the search") as lock:
        yield lock
