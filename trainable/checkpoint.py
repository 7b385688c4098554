"""What a checkpoint directory holds, and how a trial is restored from one.

    model.pt        the weights that were evaluated (EMA weights when EMA is on), class names, resolved
                    config, data config, epoch and metrics: everything the ensemble and predict need.
    train_state.pt  optimizer, scheduler, scaler, RNG states, epoch, the per-epoch history of the
                    checkpoint metric (and the raw weights when EMA is on): what an exact resume needs on
                    top of model.pt.
Which epochs write one is core/checkpoint_policy.py's decision.
"""
from __future__ import annotations

import random
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, ContextManager, Iterable

import numpy as np
import torch

from core.data import shown
from core.errors import UserError
from core.files import MODEL_FILE, TRAIN_STATE_FILE
from trainable.scheduler_state import load_scheduler_state, scheduler_state



def rng_state(loader_generator: torch.Generator) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, *, model, ema, optimizer, scheduler, scaler, epoch: int, classes, config: dict,
         data_config: dict, metrics: dict, loader_generator: torch.Generator, history: list[float]) -> None:
    evaluated = ema.module if ema is not None else model
    torch.save(
        {"model": evaluated.state_dict(), "classes": list(classes), "config": config,
         "data_config": data_config, "epoch": epoch, "metrics": metrics},
        directory / MODEL_FILE,
    )
    torch.save(
        {"raw_model": model.state_dict() if ema is not None else None,
         "optimizer": optimizer.state_dict(), "scheduler": scheduler_state(scheduler),
         "scaler": scaler.state_dict() if scaler is not None else None,
         "rng": rng_state(loader_generator), "epoch": epoch, "history": list(history)},
        directory / TRAIN_STATE_FILE,
    )


def load_model_file(directory: Path, map_location="cpu") -> dict:
    # weights_only=False: the files hold numpy RNG state and plain dicts; load only checkpoints you trust.
    return torch.load(Path(directory) / MODEL_FILE, map_location=map_location, weights_only=False)


class CheckpointDamaged(Exception):
    """A checkpoint directory that cannot be resumed from (truncated, empty, not a checkpoint, incomplete)."""


class ClassesChanged(UserError):
    """Resuming on a dataset with other classes: the head's outputs would mean other things."""


_MODEL_KEYS = {"model", "classes", "epoch"}
_STATE_KEYS = {"optimizer", "scheduler", "rng", "epoch"}


def _read(directory: Path, name: str, keys: set[str]) -> dict:
    path = Path(directory) / name
    if not path.is_file():
        raise CheckpointDamaged(f"{path} is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, empty file, a text file: torch raises a different type for each
        raise CheckpointDamaged(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or not keys <= set(payload):
        raise CheckpointDamaged(f"{path} is not a checkpoint of this project (no {', '.join(sorted(keys))})")
    return payload


def check_classes(directory: Path, saved: list[str], classes) -> None:
    if list(saved) == list(classes):
        return
    gone, new = [shown(c) for c in saved if c not in set(classes)], [shown(c) for c in classes if c not in set(saved)]
    differs = (f"missing now: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}; " if gone else "") + \
              (f"new: {', '.join(new[:5])}{' ...' if len(new) > 5 else ''}" if new else "")
    raise ClassesChanged(
        f"Checkpoint {shown(directory)} was trained on {len(saved)} classes, but the data now has {len(classes)} "
        f"({differs.rstrip('; ') or 'same names, another order'}); it cannot be resumed on this dataset. Resume "
        "with the data it was trained on, or start a new run (a new --out, or without --resume).")


def restore(directory: Path, *, model, ema, optimizer, scheduler, scaler, classes,
            loader_generator) -> tuple[int, list[float]]:
    """Load everything back; returns the number of epochs already done (the saved `epoch`) and the
    checkpoint metric of each of them. Both files are read and checked before anything is applied, so a
    damaged checkpoint (CheckpointDamaged) leaves the model and optimizer as they were."""
    saved = _read(directory, MODEL_FILE, _MODEL_KEYS)
    check_classes(directory, saved["classes"], classes)
    state = _read(directory, TRAIN_STATE_FILE, _STATE_KEYS)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    weights = saved["model"] if isinstance(saved["model"], dict) else {}
    if {k: getattr(v, "shape", None) for k, v in weights.items()} != expected:
        raise CheckpointDamaged(f"{Path(directory) / MODEL_FILE} holds weights of another model")
    if ema is not None:
        ema.module.load_state_dict(saved["model"])
        model.load_state_dict(state["raw_model"])
    else:
        model.load_state_dict(saved["model"])
    optimizer.load_state_dict(state["optimizer"])
    load_scheduler_state(scheduler, state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], loader_generator)
    return state["epoch"], list(state.get("history", []))


def restore_latest_good(candidates: Iterable[ContextManager[Path]], warn: Callable[[str], None],
                        **objects) -> tuple[int, list[float]]:
    """Restore from the newest checkpoint that is not damaged (`candidates` newest first, each opened only
    when reached: under Tune that may mean a download); (0, []) when there is none, i.e. start fresh.

    A damaged one is skipped with a warning. Every kept checkpoint is complete, so an older one resumes
    exactly too; it only repeats more epochs. Other classes are not damage: ClassesChanged stops the run."""
    damaged = []
    for candidate in candidates:
        with ExitStack() as stack:
            try:
                directory = stack.enter_context(candidate)  # under Tune: a download, which may fail too
                epoch, history = restore(directory, **objects)
            except (CheckpointDamaged, OSError) as err:
                damaged.append(str(err))
                warn(f"Warning: a checkpoint to resume from is damaged or unreadable ({err}); trying the previous one.")
                continue
        if damaged:
            warn(f"Warning: resumed from {directory} (epoch {epoch}) instead of the damaged newer checkpoint(s); "
                 f"epochs after {epoch} are trained again.")
        return epoch, history
    if damaged:
        warn(f"Warning: none of the {len(damaged)} checkpoint(s) could be read; the trial starts again from "
             "epoch 1.")
    return 0, []
