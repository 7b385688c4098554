"""The dataset a trial sees is the plan's: a cheap fingerprint of what the plan indexed, checked again by every
trial (and refit model) and by `python -m ensemble` before they use the data.

    classes   the class list, in label order
    files     every train / val / test file the index kept: its path under the root and its size
    mtimes    the same files' modification times

A class removed or added, a file added, removed or truncated changes `files`; a file rewritten in place to the
same size changes only `mtimes`, which is compared only on the machine and root the plan indexed (a copy of the
data on another node, or a dataset moved with --data, need not keep modification times). No file is read, only
listed and stat'ed. Plain Python: every process imports it.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket

from core.data import DataError, shown

VERSION = 1


def fingerprint(index) -> str:
    """A DatasetIndex's fingerprint, as the compact JSON string plan.json and the trial config carry."""
    root = str(index.root)
    paths = sorted({p for p, _ in index.train} | {p for p, _ in index.val} | set(index.test))
    names, stamps = hashlib.sha256(), hashlib.sha256()
    names.update(json.dumps(list(index.classes)).encode("utf-8", "surrogateescape"))
    for path in paths:
        stat = os.stat(path)
        names.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\n".encode("utf-8", "surrogateescape"))
        stamps.update(f"{stat.st_mtime_ns}\n".encode())
    return json.dumps({"v": VERSION, "classes": len(index.classes), "images": len(paths),
                       "files": names.hexdigest()[:20], "mtimes": stamps.hexdigest()[:20],
                       "host": socket.gethostname(), "root": root}, sort_keys=True, separators=(",", ":"))


def check_fingerprint(recorded: str, index, *, who: str, fix: str) -> None:
    """Raises DataError when `index` is not the dataset `recorded` fingerprints. `who`: what refuses ("trial
    3f2a"), `fix`: what to do about it."""
    if not recorded:
        return  # a run from before fingerprints: nothing to compare with
    try:
        then = json.loads(recorded)
    except ValueError:
        return
    if then.get("v") != VERSION:
        return
    now = json.loads(fingerprint(index))
    changed = []
    if now["classes"] != then["classes"]:
        changed.append(f"{then['classes']} classes then, {now['classes']} now")
    if now["images"] != then["images"]:
        changed.append(f"{then['images']} images then, {now['images']} now")
    if not changed and now["files"] != then["files"]:
        changed.append("the same number of images, but other names, class folders or sizes")
    same_place = now["host"] == then.get("host") and now["root"] == then.get("root")
    if not changed and same_place and now["mtimes"] != then["mtimes"]:
        changed.append("files rewritten since (their modification times differ)")
    if changed:
        raise DataError(f"{who}: the dataset at {shown(index.root)} changed since the search's plan indexed it "
                        f"({'; '.join(changed)}), so it would not train or score on the data the plan printed. "
                        f"{fix}")
