"""Decode once per node: every train/val image as uint8 pixels in one memory-mapped file.

A trial's PIL loader decodes each JPEG again every epoch, and every trial on a node does it again.
Here the dataset is decoded once, resized so that its short side is at most `short_side` (aspect
kept; smaller images are stored as they are), and written back to back as HWC uint8 into
`pixels.u8`, with `index.npz` giving each image's offset and shape. Every trial on the node maps the
same file read-only, so the page cache holds one copy for all of them.

Concurrency and invalidation:
  - the cache folder is named by a hash of the file list (path, size, mtime), short_side and the
    format version: changed data or a new size is a new key, never a stale hit;
  - one process builds while the others wait on an exclusive lock (fcntl) on `<key>.lock`; the
    build goes to a private temp folder that is renamed into place when complete, so a folder
    that exists is always whole — also after a killed build.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from core.data import DataError, cache_dir, to_rgb, upright

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: EXIF orientation applied (as load_rgb does)
BUILD_PROGRESS_S = 10.0  # a progress line at most this often while the cache builds
_BUILD_CHUNK = 256  # images decoded in flight at once: bounds the builder's memory


class DecodedImages:
    """Read-only view of a built cache; picklable (each DataLoader worker maps the file itself)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = np.load(self.folder / "index.npz")
        self.offsets = meta["offsets"]
        self.shapes = meta["shapes"]  # (N, 2): height, width
        self.paths = json.loads((self.folder / "paths.json").read_text())
        self._position = {p: i for i, p in enumerate(self.paths)}
        self._pixels = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pixels"] = None  # a memmap is re-opened, not copied, in each process
        return state

    def __len__(self) -> int:
        return len(self.paths)

    def position(self, path: str) -> int:
        return self._position[path]

    def image(self, i: int) -> torch.Tensor:
        """Image i as a (3, H, W) uint8 tensor viewing the mapped file (no copy)."""
        if self._pixels is None:
            # Copy-on-write: pages stay shared with every process mapping the file (nothing here writes),
            # and torch gets the writable array it insists on.
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="c")
        h, w = self.shapes[i]
        start = int(self.offsets[i])
        return torch.from_numpy(self._pixels[start:start + h * w * 3].reshape(h, w, 3)).permute(2, 0, 1)


def cache_key(paths: Sequence[str], short_side: int) -> str:
    digest = hashlib.sha256(f"v{FORMAT_VERSION}:{short_side}".encode())
    for p in paths:
        st = os.stat(p)
        # fsencode: a file name need not be valid UTF-8 on Linux (str.encode would raise on it).
        digest.update(b"\n" + os.fsencode(p) + f"\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def ensure_decoded(paths: Sequence[str], short_side: int, *, workers: int = 4) -> DecodedImages:
    """The node's cache for these files at this size: opened if built, else built exactly once."""
    paths = sorted(set(map(str, paths)))
    root = cache_dir() / "decoded"
    folder = root / cache_key(paths, short_side)
    if (folder / "index.npz").exists():
        return DecodedImages(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / (folder.name + ".lock"), "w")
    except OSError as err:
        raise DataError(f"loader=cache cannot write its decoded cache under {root} ({err.strerror or err}). "
                        "Set RESNET_SEARCH_CACHE to a writable folder on a local disk, or use loader=pil.") from None
    with lock:
        waited = time.perf_counter()
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if (folder / "index.npz").exists():  # another trial built it while we waited
            log.info("Decoded cache %s was built by another process (waited %.1fs)", folder,
                     time.perf_counter() - waited)
            return DecodedImages(folder)
        _build(folder, paths, short_side, workers)
    return DecodedImages(folder)


def _build(folder: Path, paths: list[str], short_side: int, workers: int) -> None:
    started = time.perf_counter()
    # print, not log: this is what a person waits on (minutes for a large dataset), and the workers log at WARNING.
    print(f"Decoding {len(paths)} images at short side {short_side} into {folder} (once per node)", flush=True)
    last_line = started
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-building-"))
    try:
        offsets, shapes, offset = np.zeros(len(paths), np.int64), np.zeros((len(paths), 2), np.int32), 0
        with open(tmp / "pixels.u8", "wb") as out, ThreadPoolExecutor(max(1, workers)) as pool:  # PIL frees the GIL
            for chunk_start in range(0, len(paths), _BUILD_CHUNK):
                chunk = paths[chunk_start:chunk_start + _BUILD_CHUNK]
                for i, pixels in enumerate(pool.map(lambda p: _decode(p, short_side), chunk), chunk_start):
                    out.write(pixels.tobytes())
                    offsets[i], shapes[i] = offset, pixels.shape[:2]
                    offset += pixels.size
                done, now = chunk_start + len(chunk), time.perf_counter()
                if now - last_line >= BUILD_PROGRESS_S and done < len(paths):
                    last_line = now
                    left = (now - started) / done * (len(paths) - done)
                    print(f"Decoding: {done}/{len(paths)} images ({done / len(paths):.0%}), "
                          f"{now - started:.0f}s, about {left:.0f}s left", flush=True)
        np.savez(tmp / "index.npz", offsets=offsets, shapes=shapes, short_side=short_side)
        (tmp / "paths.json").write_text(json.dumps(paths))
        (tmp / "build.json").write_text(json.dumps({"images": len(paths), "bytes": offset, "pid": os.getpid(),
                                                    "seconds": round(time.perf_counter() - started, 2)}))
        tmp.chmod(0o755)
        os.rename(tmp, folder)  # atomic: readers see no folder or a whole one
        print(f"Decoded {len(paths)} images in {time.perf_counter() - started:.0f}s ({offset / 1e9:.2f} GB)", flush=True)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise DataError(
            f"The disk under {folder.parent} filled up while decoding {len(paths)} images at short side "
            f"{short_side} for loader=cache (nothing half-written was kept). Free space there, point "
            f"RESNET_SEARCH_CACHE at a larger local disk, lower cache_short_side, or use loader=pil."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Decoded cache built in %.1fs (%.2f GB)", time.perf_counter() - started, offset / 1e9)


def _decode(path: str, short_side: int) -> np.ndarray:
    with Image.open(path) as im:
        w, h = im.size
        scale = short_side / min(w, h)
        if scale < 1:
            # JPEG: let the decoder skip detail we'd throw away (DCT scaling), then resize exactly.
            im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
        im = to_rgb(upright(im))  # a 90-degree turn keeps the short side, so `scale` still holds
        if scale < 1:
            w, h = im.size
            scale = short_side / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8)
