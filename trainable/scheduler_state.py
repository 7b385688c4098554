"""A learning-rate scheduler's whole state, for an exact resume.

timm's PlateauLRScheduler.state_dict() keeps only the best metric and the epoch. The torch
ReduceLROnPlateau inside it also counts bad epochs and cooldown, and timm will not save those (its
FutureWarning says so): a resumed plateau trial would wait `patience` epochs again before decaying, and
its learning rate would part from the uninterrupted run's. So the inner scheduler's state travels too.
"""
from __future__ import annotations

from torch.optim.lr_scheduler import ReduceLROnPlateau


def _plateau(scheduler) -> ReduceLROnPlateau | None:
    inner = getattr(scheduler, "lr_scheduler", None)
    return inner if isinstance(inner, ReduceLROnPlateau) else None


def scheduler_state(scheduler) -> dict:
    state = dict(scheduler.state_dict())
    inner = _plateau(scheduler)
    if inner is not None:
        state["plateau"] = inner.state_dict()
        state["restore_lr"] = scheduler.restore_lr  # the lr before timm's noise, if noise is on
    return state


def load_scheduler_state(scheduler, state: dict) -> None:
    state = dict(state)
    plateau, restore_lr = state.pop("plateau", None), state.pop("restore_lr", None)
    scheduler.load_state_dict(state)
    inner = _plateau(scheduler)
    if inner is not None and plateau is not None:
        inner.load_state_dict(plateau)
        scheduler.restore_lr = restore_lr

