"""Which images a refit trial trains and validates on (trial config keys `subset`, `subset_seed`).

    ""          the dataset's own split: DATA/train (minus the hold-out) for training, DATA/val (or the hold-out)
    kfold:K:k   train+val pooled and dealt into K stratified folds (scikit-learn's StratifiedKFold, shuffled
                with subset_seed); train on every fold but k, validate on fold k
    bag:N:b     bootstrap bag b of N: as many images as the pooled set, drawn with replacement within each
                class (seeded by subset_seed and b); validate on the pooled images the bag never drew

The split is recomputed from the dataset by whoever needs it (the trial, the ensemble's scoring task), not
shipped as a list: a refit trial on a worker node cannot read the driver's disk, and a spec of a few
characters keeps Tune's per-result config small. The pooled set is sorted by path relative to the dataset
root, so every node deals the same folds. No torch: the ensemble's driver imports this module.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from core.errors import UserError

SCHEMES = {"kfold": "folds", "bag": "bags"}
MAX_COUNT = 100  # folds or bags: more is a typo, not a plan


class SubsetError(UserError):
    pass


@dataclass(frozen=True)
class Subset:
    scheme: str  # "kfold" or "bag"
    count: int   # K folds or N bags
    part: int    # this fold / bag, 0-based

    def __str__(self) -> str:
        return f"{self.scheme}:{self.count}:{self.part}"


def parse_subset(text: str) -> Subset | None:
    """'' -> None (the dataset's own split); 'kfold:K:k' / 'bag:N:b' -> Subset; anything else -> SubsetError."""
    if text == "":
        return None
    scheme, count, part = parse_scheme_parts(text, with_part=True)
    return Subset(scheme, count, part)


def parse_scheme_parts(text: str, *, with_part: bool) -> tuple:
    """'kfold:K' (with_part=False) or 'kfold:K:k' (with_part=True), likewise for bag; checked."""
    form = "kfold:K:k or bag:N:b" if with_part else "kfold:K or bag:N"
    pieces = text.split(":")
    if len(pieces) != (3 if with_part else 2) or pieces[0] not in SCHEMES:
        raise SubsetError(f"{text!r} is not of the form {form} (e.g. {'kfold:5:0' if with_part else 'kfold:5'}).")
    scheme, numbers = pieces[0], pieces[1:]
    if not all(n.isascii() and n.isdigit() for n in numbers):
        raise SubsetError(f"{text!r}: {form} takes whole numbers after {scheme}:.")
    count = int(numbers[0])
    lowest = 2 if scheme == "kfold" else 1
    if not lowest <= count <= MAX_COUNT:
        raise SubsetError(f"{text!r}: the number of {SCHEMES[scheme]} is {count}, but must be in [{lowest}, {MAX_COUNT}].")
    if not with_part:
        return scheme, count
    part = int(numbers[1])
    if part >= count:
        raise SubsetError(f"{text!r}: {SCHEMES[scheme][:-1]} {part} does not exist; they are numbered 0..{count - 1}.")
    return scheme, count, part


def check_fits(scheme: str, count: int, labels, classes=None) -> None:
    """kfold:K deals every class into K folds: a class with fewer than K train+val images would leave folds
    without it (scikit-learn warns once per fold and trains on). Refused here, before anything trains."""
    if scheme != "kfold":
        return
    values, sizes = np.unique(np.asarray(labels, dtype=int), return_counts=True)
    if not len(values):
        raise SubsetError(f"kfold:{count} has no images to deal into folds.")
    smallest = int(sizes.min())
    if smallest < count:
        label = int(values[sizes.argmin()])
        name = classes[label] if classes is not None else label
        raise SubsetError(f"kfold:{count} needs at least {count} train+val images in every class, but class "
                          f"{name!r} has {smallest}. Use kfold:{max(smallest, 2)}"
                          f"{'' if smallest >= 2 else ' after adding images'} or bag:N.")


def pooled(index) -> list[tuple[str, int]]:
    """train + val of a DatasetIndex, sorted by path relative to its root: the set folds and bags are drawn from."""
    return sorted(index.train + index.val, key=lambda sample: os.path.relpath(sample[0], index.root))


def split(samples: list[tuple[str, int]], subset: Subset, seed: int) -> tuple[list, list]:
    """(train, val) samples of `subset` over the pooled `samples` (in pooled order)."""
    labels = np.array([label for _, label in samples])
    if subset.scheme == "kfold":
        from sklearn.model_selection import StratifiedKFold

        if len(samples) < subset.count:
            raise SubsetError(f"kfold:{subset.count} needs at least {subset.count} images; the dataset has {len(samples)}.")
        check_fits("kfold", subset.count, labels)
        folds = StratifiedKFold(n_splits=subset.count, shuffle=True, random_state=seed)
        train_rows, val_rows = list(folds.split(np.zeros(len(labels)), labels))[subset.part]
    else:
        rng = np.random.default_rng([seed, subset.part])
        train_rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), size=int((labels == c).sum()))
                                     for c in np.unique(labels)])
        val_rows = np.setdiff1d(np.arange(len(samples)), train_rows)
        if not len(val_rows):
            raise SubsetError(f"bag {subset.part} drew every one of the {len(samples)} images, so it has no "
                              "out-of-bag images to validate on; use more data or kfold.")
    return [samples[i] for i in sorted(train_rows)], [samples[i] for i in sorted(val_rows)]


def apply_subset(index, subset_text: str, seed: int):
    """The DatasetIndex a trial trains on: unchanged for '', else train/val replaced by the subset's."""
    subset = parse_subset(subset_text)
    if subset is None:
        return index
    train, val = split(pooled(index), subset, seed)
    return dataclasses.replace(index, train=tuple(train), val=tuple(val))
