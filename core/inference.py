"""How an ensemble member sees images, and what decides which images a trial was validated and tested on:
shared by the ensemble's driver side (ensemble/) and its scoring tasks (worker/scoring.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Inference:
    """How members see an image: the same for validation (where the ensemble is chosen) and test."""

    flip: bool = False       # average the logits of the image and its mirror
    size: int | None = None  # crop side; None = each member's own eval_size

    @property
    def tag(self) -> str:
        return f"{'flip' if self.flip else 'plain'}-{self.size or 'eval'}"


# What decides a trial's val and test lists: the dataset, its hold-out, and a refit model's fold or bag.
DATA_KEYS = ("data", "val_fraction", "seed", "min_image_side", "subset", "subset_seed")


def data_values(config: dict) -> dict:
    return {k: config[k] for k in DATA_KEYS}


def data_settings(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in data_values(config).items())
