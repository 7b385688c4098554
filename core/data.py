"""Dataset discovery and validation: an image-folder tree in, a checked list of (path, label) out.

Layout (folder names are the labels):
    DATA/train/<class>/<image>   required
    DATA/val/<class>/<image>     optional; without it, val_fraction of each train class is held out
    DATA/test/<image>            optional, flat, unlabeled

Bad data is dealt with here, before training, so it never crashes a trial mid-way and never passes
silently: files that are not images, corrupt, too small or too large are skipped with one counted
warning per reason; layout mistakes (no train/, an archive unpacked one level too deep, fewer than 2
classes, empty class, val class unknown to train, train images repeated in DATA/val, an empty split)
raise DataError. Decoding every file is slow (~1 min per 20k images), so results (with a content digest
that finds copies of a file) are cached per file.

File names need not be valid UTF-8 (Linux allows any bytes): they stay `str` with surrogate escapes, as
os.scandir gives them, and `shown()` turns them into printable text wherever they reach a message or a CSV.
"""
from __future__ import annotations

import difflib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import UserError, close_matches

log = logging.getLogger(__name__)

# Oversized images are found and reported by the scan (TOO_LARGE, with how to fix them); Pillow's own
# warning for each one would only repeat that, once per file, without the fix.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

EXPECTED_LAYOUT = (
    "Expected layout (folder names are the labels):\n"
    "  DATA/train/<class>/<image>   one folder per class, required\n"
    "  DATA/val/<class>/<image>     optional; without it, val_fraction of each train class is held out\n"
    "  DATA/test/<image>            optional, flat, unlabeled\n"
    "or data='builtin:digits' for the built-in demo dataset."
)

NOT_IMAGE = "not an image"
CORRUPT = "unreadable or corrupt"
TOO_SMALL = "too small"
TOO_LARGE = "too large"
BROKEN_LINK = "broken or looping link"
FOLDER_LINK = "folder link seen before"
DUPLICATE = "duplicate"
STRAY = "not in a class folder"

OK = "ok"
_CACHE_VERSION = 2  # 2: entries carry a content digest
_MAX_LISTED = 10


class DataError(UserError):
    pass


class Scan(NamedTuple):
    kind: str      # OK or a skip reason
    width: int
    height: int
    digest: str    # of the file's bytes: finds copies (also through links); "" when unreadable


def shown(path) -> str:
    """A path or name as printable UTF-8: bytes that are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class DatasetIndex:
    root: Path
    classes: tuple[str, ...]                 # label index -> original class-folder name
    train: tuple[tuple[str, int], ...]       # (absolute path, label)
    val: tuple[tuple[str, int], ...]
    test: tuple[str, ...]                    # absolute paths of DATA/test/* (flat, unlabeled), may be empty
    val_is_holdout: bool                     # True when DATA/val was absent and val was carved from train
    skipped: dict[str, tuple[str, ...]]      # reason -> paths skipped

    def class_counts(self) -> list[int]:
        """Train images per class, by label index."""
        counts = [0] * len(self.classes)
        for _, label in self.train:
            counts[label] += 1
        return counts


# ----------------------------------------------------------------------------------------- roots

def cache_dir() -> Path:
    return Path(os.environ.get("RESNET_SEARCH_CACHE") or Path.home() / ".cache" / "resnet-search")


def resolve_data_root(spec: str) -> Path:
    """A dataset folder, or 'builtin:<name>' (built on first use under cache_dir())."""
    if spec.startswith("builtin:"):
        name = spec[len("builtin:"):]
        if name not in BUILTINS:
            raise DataError(f"Unknown built-in dataset {spec!r}." + close_matches(name, BUILTINS)
                            + f" Known built-ins: {', '.join('builtin:' + b for b in BUILTINS)}.")
        return BUILTINS[name]()
    root = Path(spec).expanduser().absolute()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"Dataset folder {root} {what}.\n{EXPECTED_LAYOUT}")
    return root


# ----------------------------------------------------------------------------------------- index

def index_dataset(root: Path, *, val_fraction: float = 0.1, seed: int = 0, min_image_side: int = 8,
                  warn: Callable[[str], None] = print) -> DatasetIndex:
    """Find, decode-check and label every image under root; raise DataError on layout mistakes."""
    root = Path(root).expanduser().absolute()
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction is {val_fraction}, but must be in (0, 1).")
    train_dir, val_dir, test_dir = root / "train", root / "val", root / "test"
    if not train_dir.is_dir():
        if not root.is_dir():
            raise DataError(f"Dataset folder {shown(root)} does not exist.\n{EXPECTED_LAYOUT}")
        raise DataError(f"No train folder {shown(train_dir)}.{_nested_hint(root)}\n{EXPECTED_LAYOUT}")

    stray: list[str] = []
    classes = _sort_classes(_class_folders(train_dir, stray))
    if not classes:
        raise DataError(f"{shown(train_dir)} has no class folders.\n{EXPECTED_LAYOUT}")
    _check_not_nested(train_dir, classes)
    if len(classes) < 2:
        raise DataError(f"{shown(train_dir)} has a single class folder ({shown(classes[0])}); a classifier needs "
                        f"at least 2. Add one folder per class under {shown(train_dir)}.")
    labels = {name: i for i, name in enumerate(classes)}
    val_classes = _class_folders(val_dir, stray) if val_dir.is_dir() else None
    _check_val_classes(val_dir, val_classes or [], classes)

    # Candidate files per split; labels are attached after the scan says which files are usable.
    skipped: dict[str, list[str]] = defaultdict(list)
    skipped[STRAY] = stray
    train_files = {c: _walk(train_dir / c, skipped[FOLDER_LINK]) for c in classes}
    val_files = {c: _walk(val_dir / c, skipped[FOLDER_LINK]) for c in val_classes or []}
    test_files = _test_files(test_dir, stray)
    all_files = [p for files in (*train_files.values(), *val_files.values(), test_files) for p in files]
    scans = scan_images(root, all_files)

    def keep(paths: list[str]) -> list[str]:
        return _usable(paths, scans, min_image_side, skipped)

    # A file and its copies are one image: counted once per class, so a hold-out cannot split them.
    train_by_class = {c: _first_copies(keep(files), scans, skipped) for c, files in train_files.items()}
    val_by_class = {c: _first_copies(keep(files), scans, skipped) for c, files in val_files.items()}
    test = tuple(keep(test_files))
    skipped_final = {reason: tuple(paths) for reason, paths in skipped.items() if paths}
    for reason, paths in skipped_final.items():
        warn(_skip_message(root, reason, paths, min_image_side))

    empty = [shown(train_dir / c) for c in classes if not train_by_class[c]]
    if empty:
        raise DataError(f"{len(empty)} class folder(s) have no usable images: {', '.join(empty)}. "
                        "Add images to them or remove them" + _see_warnings(skipped_final) + ".")
    _check_copies(root, train_by_class, val_by_class, test, scans, warn)
    if val_classes is None:
        train_by_class, val_by_class = _holdout(train_by_class, val_fraction, seed)
    _check_not_empty(root, val_by_class, test_files, test, val_classes is None, skipped_final)

    missing_val = [c for c in classes if not val_by_class.get(c)]
    if missing_val:
        warn(f"val has no images for {len(missing_val)} of {len(classes)} classes "
             f"({_listing([shown(c) for c in missing_val])}); val accuracy does not cover them.")
    return DatasetIndex(
        root=root,
        classes=tuple(classes),
        train=tuple((p, labels[c]) for c in classes for p in train_by_class[c]),
        val=tuple((p, labels[c]) for c in classes for p in val_by_class.get(c, [])),
        test=test,
        val_is_holdout=val_classes is None,
        skipped=skipped_final,
    )


_SPLITS = {"train", "val", "test"}


def _nested_hint(root: Path) -> str:
    """' Found X/train: ...' when the dataset sits one folder deeper than `root` (e.g. hw1/hw1/train)."""
    deeper = sorted(d for d in root.glob("*/train") if d.is_dir() and not _is_hidden(d.parent.name))
    if not deeper:
        return ""
    return (f" Found {shown(deeper[0])}: the dataset is one folder deeper; use {shown(deeper[0].parent)} "
            "as the data folder.")


def _check_not_nested(train_dir: Path, classes: list[str]) -> None:
    # train/train/<class>/: an archive unpacked one level too deep; its split folders would become classes.
    if (train_dir / "train").is_dir() and set(classes) <= _SPLITS:
        raise DataError(
            f"{shown(train_dir)} holds {', '.join(sorted(set(classes)))} folder(s) instead of class folders: the "
            f"archive was unpacked one level too deep. Use {shown(train_dir)} as the data folder, or move the "
            f"contents of {shown(train_dir)} up one level.\n{EXPECTED_LAYOUT}")


def _first_copies(paths: list[str], scans: dict[str, Scan], skipped: dict[str, list[str]]) -> list[str]:
    """paths without later copies of the same file content (by name order); the copies are skipped."""
    seen, kept = set(), []
    for p in paths:
        digest = scans[p].digest
        if digest in seen:
            skipped[DUPLICATE].append(p)
        else:
            seen.add(digest)
            kept.append(p)
    return kept


def _check_copies(root: Path, train_by_class, val_by_class, test, scans: dict[str, Scan], warn) -> None:
    """Refuse train images repeated in DATA/val (val accuracy would count memorised images); warn about
    copies in two classes (conflicting labels) and train/val images repeated in test."""
    train_owner: dict[str, str] = {}
    conflicts = []
    for c, paths in train_by_class.items():
        for p in paths:
            first = train_owner.setdefault(scans[p].digest, p)
            if first != p:
                conflicts.append(f"{_rel(root, p)} = {_rel(root, first)}")
    if conflicts:
        warn(f"{len(conflicts)} train image(s) are copies of an image in another class (conflicting labels) "
             f"under {shown(root)} (first: {_listing(conflicts, limit=5)}); keep each image in one class folder.")
    leaked = [f"{_rel(root, p)} = {_rel(root, train_owner[scans[p].digest])}"
              for paths in val_by_class.values() for p in paths if scans[p].digest in train_owner]
    if leaked:
        raise DataError(
            f"{len(leaked)} image(s) in {shown(root / 'val')} are copies of train images (first: "
            f"{_listing(leaked, limit=5)}): val accuracy would count images the model trained on. Remove "
            "them from val/ or from train/ (or remove val/ to hold out val_fraction of train instead).")
    labelled = set(train_owner) | {scans[p].digest for paths in val_by_class.values() for p in paths}
    in_test = [_rel(root, p) for p in test if scans[p].digest in labelled]
    if in_test:
        warn(f"{len(in_test)} test image(s) under {shown(root)} are copies of train or val images "
             f"(first: {_listing(in_test)}); their predictions are not a test of the model.")


def _rel(root: Path, path: str) -> str:
    return shown(os.path.relpath(path, root))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(split_dir: Path, stray: list[str]) -> list[str]:
    """Visible sub-folder names; files lying directly in the split folder are collected as strays."""
    names = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        if entry.is_dir():
            names.append(entry.name)
        else:
            stray.append(os.path.join(split_dir, entry.name))
    return names


def _sort_classes(names: list[str]) -> list[str]:
    # "2" before "10" when every name is a number; a string sort would silently reorder labels.
    if all(n.isascii() and n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _walk(folder: Path, repeated: list[str]) -> list[str]:
    """Every visible file under a class folder (nested folders included, like torchvision's ImageFolder).

    Folder links are followed once: a link back to a folder already read or to one that holds this class
    folder (a loop, which os.walk would follow until the path is too long; through a parent it would also
    pull the other classes in) is skipped and collected in `repeated`."""
    top = os.path.realpath(folder)
    found, seen = [], {top}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(d for d in dirnames if not _is_hidden(d)):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen or top.startswith(real.rstrip(os.sep) + os.sep):
                repeated.append(os.path.join(dirpath, d))
            else:
                seen.add(real)
                kept.append(d)
        dirnames[:] = kept
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if not _is_hidden(f)]
    return found


def _test_files(test_dir: Path, stray: list[str]) -> list[str]:
    if not test_dir.is_dir():
        return []
    files = []
    for entry in sorted(os.scandir(test_dir), key=lambda e: e.name):
        if _is_hidden(entry.name):
            continue
        # test/ is flat: a sub-folder there is most likely a misplaced class folder, not test data.
        (stray if entry.is_dir() else files).append(os.path.join(test_dir, entry.name))
    return files


def _check_val_classes(val_dir: Path, val_classes: list[str], classes: list[str]) -> None:
    unknown = [c for c in val_classes if c not in set(classes)]
    if not unknown:
        return
    described = []
    for c in unknown:
        guess = difflib.get_close_matches(c, classes, n=1)
        described.append(shown(val_dir / c) + (f" (did you mean {shown(guess[0])!r}?)" if guess else ""))
    raise DataError(
        f"{len(unknown)} val class folder(s) have no matching train class: {', '.join(described)}. "
        f"Known train classes ({len(classes)}): {_listing([shown(c) for c in classes], limit=30)}. "
        "Rename or remove those val folders: val folder names must match train folder names."
    )


def _usable(paths: list[str], scans: dict[str, Scan], min_side: int, skipped: dict[str, list[str]]) -> list[str]:
    kept = []
    for p in paths:
        kind, width, height, _ = scans[p]
        if kind != OK:
            skipped[kind].append(p)
        elif min(width, height) < min_side:
            skipped[TOO_SMALL].append(p)
        else:
            kept.append(p)
    return kept


def _holdout(train_by_class: dict[str, list[str]], fraction: float, seed: int):
    """Per-class seeded hold-out; a class keeps >= 1 train image, and one with a single image gives none."""
    train, val = {}, {}
    for name, paths in train_by_class.items():
        n = len(paths)
        n_val = min(n - 1, max(1, round(n * fraction)))
        # Seeded by (seed, class name): a class's split does not change when other classes are added.
        order = sorted(paths)
        random.Random(f"{seed}/{name}").shuffle(order)
        held = set(order[:n_val])
        train[name] = [p for p in paths if p not in held]
        val[name] = [p for p in paths if p in held]
    return train, val


def _check_not_empty(root: Path, val_by_class, test_files, test, holdout: bool, skipped) -> None:
    if not any(val_by_class.values()):
        if holdout:
            raise DataError(f"The validation hold-out from {shown(root / 'train')} is empty: every class has a "
                            "single usable image. Add images, or provide DATA/val.")
        raise DataError(f"{shown(root / 'val')} has no usable images" + _see_warnings(skipped) + ". Add images to "
                        "it, or remove it to hold out val_fraction of each train class instead.")
    if test_files and not test:
        raise DataError(f"{shown(root / 'test')} has {len(test_files)} file(s) but no usable image"
                        + _see_warnings(skipped) + ". Fix or remove them.")


def _see_warnings(skipped: dict) -> str:
    return " (skipped files are listed in the warnings above)" if skipped else ""


def _listing(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _skip_message(root: Path, reason: str, paths: Sequence[str], min_side: int) -> str:
    n = len(paths)
    what = {
        NOT_IMAGE: f"{n} file(s) that are not images",
        CORRUPT: f"{n} unreadable or corrupt image(s)",
        TOO_SMALL: f"{n} image(s) too small, shorter side < {min_side} px",
        TOO_LARGE: (f"{n} image(s) over Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                    "(too large to decode safely; downscale them below that, e.g. "
                    "mogrify -resize '8000x8000>' FILE)"),
        BROKEN_LINK: f"{n} link(s) that point nowhere or loop (fix or remove the links)",
        FOLDER_LINK: f"{n} folder link(s) back to a folder already read or to a parent (a link loop; each folder is read once)",
        DUPLICATE: f"{n} copies of another file in the same class folder (each image counted once)",
        STRAY: f"{n} file(s) not in a class folder (train/ and val/ hold one folder per class; test/ is flat)",
    }[reason]
    relative = [_rel(root, p) for p in paths]
    return f"Skipped {what} under {shown(root)} (first: {_listing(relative)})"


# ------------------------------------------------------------------------------------------ scan

def scan_images(root: Path, paths: Sequence[str]) -> dict[str, Scan]:
    """path -> Scan (kind 'ok' or a skip reason, size, content digest); decodes only what changed."""
    cache_file = cache_dir() / "scans" / (hashlib.sha256(os.fsencode(root)).hexdigest()[:20] + ".json")
    cached = _read_cache(cache_file)
    results, entries, todo = {}, {}, []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:  # a dangling or looping link, or removed while we looked
            results[p] = Scan(BROKEN_LINK if os.path.islink(p) else CORRUPT, 0, 0, "")
            continue
        key = [st.st_size, st.st_mtime_ns]
        hit = cached.get(p)
        if hit and hit[:2] == key:
            results[p] = Scan(*hit[2:])
            entries[p] = hit
        else:
            todo.append((p, key))
    if todo:
        log.info("Checking %d new or changed images under %s (cached for next time)", len(todo), shown(root))
        with ThreadPoolExecutor() as pool:  # PIL releases the GIL while decoding
            for (p, key), result in zip(todo, pool.map(lambda item: _probe(item[0]), todo)):
                results[p] = result
                # Failures are not cached: fixing a file's permissions leaves its size and mtime alone.
                if result.kind != CORRUPT:
                    entries[p] = key + list(result)
    if entries != cached:
        _write_cache(cache_file, entries)
    return results


def _probe(path: str) -> Scan:
    """Fully decode one file: load() is what catches truncated files; open() only reads the header."""
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except OSError:
        return Scan(CORRUPT, 0, 0, "")
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    try:
        with Image.open(io.BytesIO(payload)) as im:
            if Image.MAX_IMAGE_PIXELS and im.width * im.height > Image.MAX_IMAGE_PIXELS:
                return Scan(TOO_LARGE, im.width, im.height, digest)
            im.load()
            to_rgb(im)  # the conversion load_rgb will do must work too, or a trial would crash mid-way
            return Scan(OK, im.width, im.height, digest)
    except Image.DecompressionBombError:  # over twice the limit: Pillow refuses even to open it
        return Scan(TOO_LARGE, 0, 0, digest)
    except UnidentifiedImageError:
        # Not decodable: a file named like an image is a broken image, anything else is not an image.
        return Scan(CORRUPT if Path(path).suffix.lower() in _image_extensions() else NOT_IMAGE, 0, 0, digest)
    except Exception:  # truncated, corrupt, unreadable: all mean "cannot use"
        return Scan(CORRUPT, 0, 0, digest)


def _image_extensions() -> set[str]:
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _read_cache(cache_file: Path) -> dict[str, list]:
    try:
        data = json.loads(cache_file.read_text())
        return data["files"] if data.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # missing or damaged cache: rescan


def _write_cache(cache_file: Path, entries: dict[str, list]) -> None:
    # Several trials on a node may scan at once: write a private temp file, then atomically replace.
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": _CACHE_VERSION, "files": entries}, f)
        os.replace(tmp, cache_file)
    except OSError as e:
        log.warning("Could not write the image scan cache %s (%s); the next run rescans.", cache_file, e)


# --------------------------------------------------------------------------------------- loading

def load_rgb(path: str) -> Image.Image:
    """Any image as 8-bit RGB, upright: EXIF orientation applied, alpha composited over white, 16-bit and
    float scaled (not clipped) to 8-bit."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(upright(im))


def upright(im: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: phone photos store pixels sideways plus an EXIF Orientation tag.
    The decoded cache calls this too, so both loaders see the same pixels."""
    ImageOps.exif_transpose(im, in_place=True)
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        # PIL's own convert clips these at 255, turning most of the range white.
        return Image.fromarray(_to_8_bit(np.asarray(im, dtype=np.float64), im.mode), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Integers (I;16, I) span 0..65535; floats 0..1 (the float TIFF convention), else 0..255 or 0..65535,
    whichever holds them; values outside every such range are stretched from their own min..max."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:  # negative or beyond 16 bits (32-bit integers, unnormalised floats): stretch min..max
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


class ImageListDataset:
    """(path, label) pairs, or bare paths (label -1), loaded as RGB and passed through `transform`.

    A map-style dataset for torch's DataLoader (__len__ + __getitem__ are all it needs); no torch import, so
    the search driver can index data without loading torch."""

    def __init__(self, samples: Sequence[tuple[str, int]] | Sequence[str], transform=None):
        self.samples = [(s, -1) if isinstance(s, (str, os.PathLike)) else (str(s[0]), int(s[1])) for s in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = load_rgb(path)
        return (self.transform(image) if self.transform is not None else image), label


# -------------------------------------------------------------------------------------- builtins

def _digits() -> Path:
    """sklearn's bundled 8x8 digits as a 32x32 RGB image folder, built once per cache dir."""
    target = cache_dir() / "datasets" / "digits-v1"
    if target.is_dir():  # only ever appears by an atomic rename, so it is complete
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".digits-v1-building-"))
    try:
        _write_digits(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is not secret
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        # Another process on this node finished first: use its copy.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_digits(out: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    ids = np.arange(len(digits.target))
    train, rest = train_test_split(ids, test_size=0.30, stratify=digits.target, random_state=0)
    val, test = train_test_split(rest, test_size=0.50, stratify=digits.target[rest], random_state=0)

    def save(i: int, folder: Path) -> str:
        pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
        folder.mkdir(parents=True, exist_ok=True)
        name = f"digit_{i:05d}"
        Image.fromarray(pixels, "L").resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / f"{name}.png")
        return name

    for split, split_ids in (("train", train), ("val", val)):
        for i in split_ids:
            save(i, out / split / str(digits.target[i]))
    rows = [f"{save(i, out / 'test')},{digits.target[i]}" for i in sorted(test)]
    (out / "test_labels.csv").write_text("image_name,label\n" + "\n".join(rows) + "\n")


BUILTINS: dict[str, Callable[[], Path]] = {"digits": _digits}
