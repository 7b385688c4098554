"""Where a checkpoint lives: a local folder, NFS, or s3:// / gs:// read through pyarrow's filesystems, as
Ray Tune's own storage reads and writes them. No torch: the driver stamps checkpoints, tasks read them.

A leaderboard's best_checkpoint is what Tune's Checkpoint.path holds: a local path, or for cloud storage
the path inside the bucket ("bucket/tune/name/trial/checkpoint_000001") without its scheme. The run's
storage URI (--storage) supplies the filesystem then, query options such as endpoint_override included.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

MODEL_FILE = "model.pt"  # trainable.checkpoint.MODEL_FILE, without importing torch here
PLAN_FILE = "plan.json"  # search/saved_plan.py writes it into results/<name>/ when a search starts


def run_storage(run_dir: Path) -> str | None:
    """The cloud storage URI the search in `run_dir` used (from its plan.json), so `python -m ensemble RUN`
    finds checkpoints in a bucket without --storage; None for local storage or a run without a plan."""
    try:
        storage = json.loads((Path(run_dir) / PLAN_FILE).read_text()).get("storage")
    except (OSError, ValueError, AttributeError):
        return None
    return storage if isinstance(storage, str) and "://" in storage and not storage.startswith("file://") else None


@dataclass(frozen=True)
class Location:
    """A checkpoint folder: its path as recorded, and the storage URI that resolves it (None: local)."""

    path: str
    storage: str | None = None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """(filesystem, path of the folder inside it)."""
        if "://" in self.path:
            return pyarrow.fs.FileSystem.from_uri(self.path)
        if self.storage and "://" in self.storage:
            fs, _ = pyarrow.fs.FileSystem.from_uri(self.storage)
            return fs, self.path
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(self.path)

    def __str__(self) -> str:
        return self.path


def model_file_stamp(location: Location) -> list[int] | None:
    """[size, mtime_ns] of the checkpoint's model file, or None when it is absent: a rewritten checkpoint
    gets a new stamp, so cached logits of the old one are never reused."""
    fs, folder = location.filesystem()
    info = fs.get_file_info(f"{folder.rstrip('/')}/{MODEL_FILE}")
    if info.type != pyarrow.fs.FileType.File:
        return None
    return [int(info.size), int(info.mtime_ns or 0)]


def read_model_file(location: Location) -> bytes:
    fs, folder = location.filesystem()
    with fs.open_input_file(f"{folder.rstrip('/')}/{MODEL_FILE}") as f:
        return f.read()


def join_uri(base: str, *parts: str) -> str:
    """base/part/..., keeping a URI's query (s3://b/tune?endpoint_override=...) after the path, where pyarrow
    reads it. The search's experiment path and the refit's are both joined here."""
    path, _, query = base.partition("?")
    joined = "/".join([path.rstrip("/"), *parts])
    return joined + (f"?{query}" if query else "")
