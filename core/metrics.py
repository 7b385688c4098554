"""The metrics a trial reports per epoch that a search can rank by, each with the direction that is better.

Every consumer asks here: the search settings (which metric, and its mode), the trial's checkpoint ranking
(core/checkpoint_policy.py), the plateau lr scheduler (it steps on the search's metric, in its direction),
the local reporter's pruning and the leaderboard.
"""
from __future__ import annotations

import math

# name -> "max" or "min"; val_top5_acc is reported only with more than 5 classes (trainable/loop.py)
DIRECTIONS = {"val_acc": "max", "val_macro_f1": "max", "val_top5_acc": "max", "val_loss": "min"}
NAMES = tuple(DIRECTIONS)
TOP5_MIN_CLASSES = 6


def direction(metric: str) -> str:
    """'max' or 'min'; KeyError for a name that is not a search metric."""
    return DIRECTIONS[metric]


def signed(metric: str, value: float) -> float:
    """The value turned so that larger is better (NaN stays NaN)."""
    return value if DIRECTIONS[metric] == "max" else -value


def is_better(metric: str, value: float, than: float | None) -> bool:
    """Strictly better than `than` (None or NaN: anything finite is better)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if than is None or (isinstance(than, float) and math.isnan(than)):
        return True
    return signed(metric, value) > signed(metric, than)


def best_index(metric: str, values: list[float]) -> int | None:
    """Index of the best value (the first of equals), skipping NaN; None when there is none."""
    best = None
    for i, v in enumerate(values):
        if is_better(metric, v, None if best is None else values[best]):
            best = i
    return best
