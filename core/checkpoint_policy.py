"""Which epochs report a checkpoint, and which report metrics only.

Tune resumes a failed trial from its LATEST reported checkpoint and keeps the best `keep_checkpoints`
of the reported ones by the search metric (plus that latest one). So every checkpoint a trial reports is
complete (model.pt + train_state.pt: an exact resume from any of them), and an epoch reports one when
  - its metric enters the trial's own top `keep_checkpoints` so far (ties count, as Tune keeps the later
    of equal scores): the best checkpoints, which the ensemble reads, are exactly the ones Tune keeps;
  - or it is a multiple of `resume_state_every`, or the last epoch: a resumed trial repeats at most
    `resume_state_every - 1` finished epochs (plus the one that was running). With the default 3 every
    ASHA rung of the full space (3, 9, 27) holds a checkpoint.
Every other epoch is reported with metrics only; it costs no bytes and no upload.

`checkpoint_new_bests=False` drops the first rule: 3x fewer checkpoints at every 3 epochs, but a trial's
best checkpoint is then its best saved epoch, not its best epoch (BENCHMARKS.md section 10).
A cadence that does not divide ASHA's grace period leaves the trials stopped at the first rung without
any checkpoint in that mode.
"""
from __future__ import annotations

import math

from core.metrics import signed


def enters_top(history: list[float], value: float, keep: int, metric: str) -> bool:
    """Whether `value` ranks among the best `keep` of `history + [value]` (a tie with the keep-th counts)."""
    if len(history) < keep:
        return True
    kth_best = sorted((signed(metric, v) for v in history), reverse=True)[keep - 1]
    return signed(metric, value) >= kth_best


def checkpoint_due(epoch: int, metrics: dict, history: list[float], *, epochs: int, every: int, keep: int,
                   metric: str, new_bests: bool = True) -> bool:
    """epoch counts from 1; history holds the metric of epochs 1..epoch-1 (the ones before this)."""
    if epoch % every == 0 or epoch == epochs:
        return True
    if not new_bests:
        return False
    value = metrics.get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True  # cannot rank it: keep the checkpoint rather than lose a possibly best model
    return enters_top(history, value, keep, metric)
