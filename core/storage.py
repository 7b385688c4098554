"""Where a search keeps its trials and checkpoints (--storage), parsed once, and where a checkpoint lives.

`StorageURI.parse` is the one reader of a --storage string, for the search, the ensemble and predict alike:
  - a local folder: a path (relative to the current folder, `~` expanded) or a file:///absolute URI;
  - a cloud URI Ray Tune's storage (pyarrow.fs) reads: s3://BUCKET/PATH, gs://BUCKET/PATH, with options after
    '?' (s3://b/tune?endpoint_override=HOST:PORT&scheme=http), which stay after every path joined to it.
Anything else is refused with what to give instead.

A leaderboard's best_checkpoint is what Tune's Checkpoint.path holds: a local path, or for cloud storage
the path inside the bucket ("bucket/tune/name/trial/checkpoint_000001") without its scheme. The run's
storage URI supplies the filesystem then, query options such as endpoint_override included.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

from core.errors import UserError
from core.files import MODEL_FILE, PLAN_FILE

EXAMPLES = "a folder (e.g. results), file:///absolute/folder, s3://BUCKET/PATH or gs://BUCKET/PATH"


class StorageError(UserError):
    pass


@dataclass(frozen=True)
class StorageURI:
    """value: what Tune's storage_path gets, an absolute local folder or a cloud URI (query kept)."""

    value: str

    @property
    def is_cloud(self) -> bool:
        return "://" in self.value

    @property
    def local_path(self) -> Path | None:
        return None if self.is_cloud else Path(self.value)

    def join(self, *parts: str) -> str:
        return join_uri(self.value, *parts)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, given: str, flag: str = "--storage") -> "StorageURI":
        if not isinstance(given, str) or not given.strip():
            raise StorageError(f"{flag} is empty; give {EXAMPLES}.")
        if "\x00" in given or not given.isprintable():
            raise StorageError(f"{flag} {given!r} holds a control character; give {EXAMPLES}.")
        if given.startswith("file:"):
            return cls(_local_folder(_file_uri_path(given, flag), given, flag))
        if "://" in given:
            scheme = given.split("://", 1)[0]
            if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
                raise StorageError(f"{flag} {given!r} has no usable scheme before '://'; give {EXAMPLES}.")
            return cls(given)
        return cls(_local_folder(Path(given).expanduser().resolve(), given, flag))


VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # the kernel's views, not disks: writes there fail or vanish


def _local_folder(path: Path, given: str, flag: str) -> str:
    if any(path == Path(root) or Path(root) in path.parents for root in VIRTUAL_ROOTS):
        raise StorageError(f"{flag} {given!r} is under /{path.parts[1]}, a view of the kernel, "
                           "not a disk. Give a folder on a disk, e.g. --storage results.")
    return str(path)


def _file_uri_path(given: str, flag: str) -> Path:
    parts = urllib.parse.urlsplit(given)
    if not given.startswith("file://"):
        raise StorageError(f"{flag} {given!r} is not a file URI (file:///absolute/folder). Give the folder itself "
                           f"({given[len('file:'):] or '.'}) or file:///ABSOLUTE/PATH.")
    if parts.netloc not in ("", "localhost"):
        raise StorageError(f"{flag} {given!r} names the host {parts.netloc!r}; a file URI here is a folder on this "
                           "machine: file:///ABSOLUTE/PATH (three slashes), or mount the remote folder and give its path.")
    if parts.query or parts.fragment:
        raise StorageError(f"{flag} {given!r} has options after '?' or '#', which a local folder does not take "
                           f"(the search would write into a folder named with them). Give file://{parts.path}.")
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/"):
        raise StorageError(f"{flag} {given!r}: a file URI needs an absolute path, file:///ABSOLUTE/PATH.")
    return Path(path).resolve()


def join_uri(base: str, *parts: str) -> str:
    """base/part/..., keeping a URI's query (s3://b/tune?endpoint_override=...) after the path, where pyarrow
    reads it. The search's experiment path and the refit's are both joined here."""
    path, _, query = base.partition("?")
    joined = "/".join([path.rstrip("/"), *parts])
    return joined + (f"?{query}" if query else "")


def run_storage(run_dir: Path) -> str | None:
    """The cloud storage URI the search in `run_dir` used (from its plan.json), so `python -m ensemble RUN`
    finds checkpoints in a bucket without --storage; None for local storage or a run without a plan."""
    try:
        storage = json.loads((Path(run_dir) / PLAN_FILE).read_text()).get("storage")
    except (OSError, ValueError, AttributeError):
        return None
    return storage if isinstance(storage, str) and "://" in storage else None


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
