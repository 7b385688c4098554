"""Storage that stays bounded: once the ensemble (and its refit) are written, the search's checkpoints that
nothing can use any more are removed, on a local folder or a bucket alike (pyarrow's filesystems, as Tune's).

Kept: every ended trial's best checkpoint (the leaderboard's best_checkpoint: what `python -m ensemble` and a
refit read), every ensemble member's checkpoint, and every checkpoint of a trial that has not ended
(interrupted or not started: --resume continues from them). Removed: the other checkpoints of ended trials
(Tune keeps keep_checkpoints per trial, and the latest), and the train_state.pt of every ended trial's kept
checkpoint: the optimizer, scheduler and RNG state (8 bytes a parameter of AdamW's, twice the weights) is what only
an exact resume reads, and Tune never resumes an ended trial; the ensemble, predict and a refit read model.pt alone.
keep_train_state (--keep-train-state) keeps it, for whoever means to train a finished trial on from its checkpoint
(trainable/checkpoint.py restores from both files). Refit models live in their own experiment (results/<name>/refit/...) and are never touched.
--keep-all-checkpoints turns all of this off.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs

from core.files import ENSEMBLE_MANIFEST, TRAIN_STATE_FILE
from core.trial_status import TrialStatus

CHECKPOINT_PREFIX = "checkpoint_"


@dataclass(frozen=True)
class Folder:
    trial_id: str
    name: str      # checkpoint_000004
    path: str      # inside the filesystem
    bytes: int

    @property
    def key(self) -> tuple[str, str]:
        return self.trial_id, self.name


def _filesystem(experiment_path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in experiment_path.partition("?")[0]:
        return pyarrow.fs.FileSystem.from_uri(experiment_path)
    return pyarrow.fs.LocalFileSystem(), str(Path(experiment_path).resolve())


def checkpoint_folders(experiment_path: str) -> list[Folder]:
    """Every trial's checkpoint folders in the experiment, with their sizes."""
    fs, root = _filesystem(experiment_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    sizes: dict[tuple[str, str, str], int] = {}
    for info in infos:
        parts = info.path[len(root):].strip("/").split("/")
        if len(parts) >= 3 and parts[1].startswith(CHECKPOINT_PREFIX) and info.type == pyarrow.fs.FileType.File:
            key = (parts[0], parts[1], f"{root.rstrip('/')}/{parts[0]}/{parts[1]}")
            sizes[key] = sizes.get(key, 0) + int(info.size or 0)
        elif len(parts) == 2 and parts[1].startswith(CHECKPOINT_PREFIX) and info.type == pyarrow.fs.FileType.Directory:
            sizes.setdefault((parts[0], parts[1], f"{root.rstrip('/')}/{parts[0]}/{parts[1]}"), 0)
    return [Folder(t, n, p, b) for (t, n, p), b in sorted(sizes.items())]


def _key(recorded: str) -> tuple[str, str] | None:
    """(trial, checkpoint) of a recorded checkpoint path, local or inside a bucket."""
    parts = str(recorded).partition("?")[0].rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 and parts[-1].startswith(CHECKPOINT_PREFIX) else None


def members(out_dir: Path) -> set[tuple[str, str]]:
    try:
        manifest = json.loads((Path(out_dir) / ENSEMBLE_MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    return {k for m in manifest.get("members", []) if (k := _key(m.get("checkpoint", "")))}


def to_keep(table: pd.DataFrame, out_dir: Path, folders: list[Folder]) -> set[tuple[str, str]]:
    keep = members(out_dir)
    for row in table.itertuples():
        ended = TrialStatus(row.status).ended
        if not ended:  # --resume continues it from these
            keep |= {f.key for f in folders if f.trial_id == str(row.trial_id)}
        elif isinstance(row.best_checkpoint, str) and (k := _key(row.best_checkpoint)):
            keep.add(k)
    listed = {str(t) for t in table["trial_id"]}
    keep |= {f.key for f in folders if f.trial_id not in listed}  # a trial the leaderboard does not know: left alone
    return keep


@dataclass(frozen=True)
class Cleanup:
    before: int          # bytes of checkpoints before
    after: int
    kept: int            # folders
    removed: int
    states_removed: int = 0  # train_state.pt files of kept checkpoints

    def text(self) -> str:
        removed = []
        if self.removed:
            removed.append(f"{self.removed} folder(s): no ensemble member, not a trial's best")
        if self.states_removed:
            removed.append(f"the optimizer state of {self.states_removed} ended trial checkpoint(s): only an exact "
                           "resume reads it, --keep-train-state keeps it")
        return (f"Checkpoints kept: {_mb(self.after)} in {self.kept} folder(s)"
                + (f" (removed {_mb(self.before - self.after)}: {'; '.join(removed)})" if removed else ""))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _all_folders(experiment_paths) -> list[Folder]:
    """A grown search's experiments (its first and each growth's, search/growth.py) are one search's trials."""
    paths = [experiment_paths] if isinstance(experiment_paths, str) else list(experiment_paths)
    return [folder for path in paths for folder in checkpoint_folders(path)]


def kept_bytes(experiment_path) -> Cleanup:
    folders = _all_folders(experiment_path)
    total = sum(f.bytes for f in folders)
    return Cleanup(total, total, len(folders), 0)


def clean(experiment_path, table: pd.DataFrame, out_dir: Path, *, keep_train_state: bool = False) -> Cleanup:
    """Removes what nothing can use; the caller has written the ensemble (and refit) first. experiment_path: one
    experiment, or a list of them (a grown search's, on one storage)."""
    first = experiment_path if isinstance(experiment_path, str) else list(experiment_path)[0]
    fs, _ = _filesystem(first)
    folders = _all_folders(experiment_path)
    keep = to_keep(table, out_dir, folders)
    before = sum(f.bytes for f in folders)
    removed = [f for f in folders if f.key not in keep]
    for folder in removed:
        fs.delete_dir(folder.path)
    states_removed = 0
    if not keep_train_state:
        ended = {str(row.trial_id) for row in table.itertuples() if TrialStatus(row.status).ended}
        for folder in folders:
            if folder.key in keep and folder.trial_id in ended:
                state = f"{folder.path}/{TRAIN_STATE_FILE}"
                if fs.get_file_info(state).type == pyarrow.fs.FileType.File:
                    fs.delete_file(state)
                    states_removed += 1
    after = sum(f.bytes for f in _all_folders(experiment_path))
    return Cleanup(before, after, len(folders) - len(removed), len(removed), states_removed)


def after_ensemble(plan, table: pd.DataFrame) -> str:
    """The search's last storage step: what is kept, after removing what nothing can use (unless opted out, or
    the ensemble or refit it would serve is not written: then nothing is removed)."""
    experiment = getattr(plan, "experiment_paths", None) or plan.experiment_path
    if getattr(plan, "keep_all_checkpoints", False):
        return kept_bytes(experiment).text() + " (--keep-all-checkpoints)"
    manifest_path = Path(plan.out_dir) / ENSEMBLE_MANIFEST
    if plan.ensemble_top_k:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return kept_bytes(experiment).text() + " (no ensemble written: none removed)"
        if plan.refit and "refit" not in manifest:
            return kept_bytes(experiment).text() + " (the refit did not finish: none removed)"
    return clean(experiment, table, plan.out_dir, keep_train_state=getattr(plan, "keep_train_state", False)).text()
