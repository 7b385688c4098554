"""Everything a finished (or interrupted) search leaves in results/<name>/ besides Ray's own files.

    leaderboard.csv / leaderboard.md   one row per trial (search/leaderboard.py)
    best_config.json                   the best trial's full trial config, runnable with `python -m trainable --config`
    space.py                           the space file as it was run
    plan.json                          the resolved plan a --resume continues (search/saved_plan.py)
    provenance.json                    git commit, package versions, host, the command; each --resume appended
"""
from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from core.atomic import write_text
from core.files import BEST_CONFIG, LEADERBOARD_CSV, LEADERBOARD_MD, PROVENANCE_FILE, SPACE_COPY
from core.trial_status import TrialStatus
from search.leaderboard import to_markdown

PACKAGES = ("torch", "torchvision", "timm", "ray", "optuna", "pandas", "numpy", "pillow", "scikit-learn",
            "tensorboard", "tensorboardX")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def write_run_files(out_dir: Path, space_path: Path) -> None:
    """At the start of a run: the space file and provenance, so even an interrupted run is reproducible.
    A resumed run keeps the original command and appends its own (command, time, git commit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / SPACE_COPY).exists():
        write_text(out_dir / SPACE_COPY, Path(space_path).read_text(encoding="utf-8-sig"))
    path = out_dir / PROVENANCE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # a new run (or an unreadable record: start a fresh one)
        record = None
    if record is None:
        record = provenance()
    else:
        resume = {"command": shlex.join(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "git_commit": _git("rev-parse", "HEAD")}
        record["resumes"] = [*record.get("resumes", []), resume]
    write_text(path, json.dumps(record, indent=2))


def provenance() -> dict:
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "host": platform.node(),
        "command": shlex.join(sys.argv),
    }


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_leaderboard(out_dir: Path, table: pd.DataFrame, best_config: dict | None) -> None:
    """Each file whole or not at all (core/atomic.py): a full disk leaves the previous leaderboard in place."""
    write_text(out_dir / LEADERBOARD_CSV, table.to_csv(index=False))
    write_text(out_dir / LEADERBOARD_MD, to_markdown(table) + "\n")
    if best_config is not None:
        write_text(out_dir / BEST_CONFIG, json.dumps(best_config, indent=2, sort_keys=True))


def tool_command(name: str) -> str:
    """A console script of this environment as a command that works as printed: its bare name when the shell
    finds this environment's copy (an activated venv), else its path (.venv/bin/NAME)."""
    here = Path(sys.executable).parent / name
    if not here.exists():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == here.resolve():
        return name
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def summary(table: pd.DataFrame, *, metric: str, max_epochs: int, out_dir: Path, storage_dir: str,
            story: list[str] = ()) -> str:
    """story: a line each on what TPE and the ensemble did (search/story.py), after the trials' line (ASHA's)."""
    status = table["status"]
    ran = table[status != TrialStatus.FAILED.value]
    if ran.empty or ran["epochs"].max() == 0:
        return f"No trial finished. Reasons are in {out_dir / 'leaderboard.md'}."
    best = ran.iloc[0]
    epochs_run = int(table["epochs"].sum())
    epochs_full = len(table) * max_epochs
    saved = 1 - epochs_run / epochs_full if epochs_full else 0.0
    stopped = int((status == TrialStatus.STOPPED_EARLY.value).sum())
    failed = int((status == TrialStatus.FAILED.value).sum())
    unfinished = int(status.isin([TrialStatus.INTERRUPTED.value, TrialStatus.NOT_STARTED.value]).sum())
    unfinished_text = f", {unfinished} interrupted or not started" if unfinished else ""
    metrics = ", ".join(f"{c[5:]} {best[c]:.4f}" for c in table.columns
                        if c.startswith("best_val") and pd.notna(best[c]))
    # An interrupted search has a best trial so far, and its unrun epochs are not ASHA's savings.
    cost = (f"{epochs_run} of the {epochs_full} epochs that running every trial to max_epochs would cost have run"
            if unfinished else
            f"ASHA ran {epochs_run} of the {epochs_full} epochs that running every trial to max_epochs would cost: "
            f"{saved:.0%} saved")
    return "\n".join([
        f"Best trial{' so far' if unfinished else ''} {best['trial_id']} "
        f"({best['backbone'] if 'backbone' in best else ''}): {metrics} at epoch {best['best_epoch']} of {best['epochs']}.",
        f"Trials: {len(table)} ({stopped} stopped early by ASHA, {failed} failed{unfinished_text}). {cost}.",
        *story,
        f"Files: {out_dir}/leaderboard.md, best_config.json; trials and checkpoints in {storage_dir}.",
        f"Compare trials: {tool_command('tensorboard')} --logdir {storage_dir}",
    ])
