"""What a checkpoint directory holds, and how a trial is restored from one.

    model.pt        the weights that were evaluated (EMA weights when EMA is on), class names, resolved
                    config, data config, epoch and metrics: everything the ensemble and predict need.
    train_state.pt  optimizer, scheduler, scaler, RNG states, epoch, the per-epoch history of the
                    checkpoint metric (and the raw weights when EMA is on): what an exact resume needs on
                    top of model.pt.
Which epochs write one is trainable/checkpoint_policy.py's decision.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from trainable.scheduler_state import load_scheduler_state, scheduler_state

MODEL_FILE = "model.pt"
TRAIN_STATE_FILE = "train_state.pt"


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


def restore(directory: Path, *, model, ema, optimizer, scheduler, scaler, classes,
            loader_generator) -> tuple[int, list[float]]:
    """Load everything back; returns the number of epochs already done (the saved `epoch`) and the
    checkpoint metric of each of them."""
    saved = load_model_file(directory)
    if saved["classes"] != list(classes):
        raise RuntimeError(
            f"Checkpoint {directory} was trained on classes {saved['classes'][:5]}..., but the data now has "
            f"{list(classes)[:5]}...; it cannot be resumed on this dataset."
        )
    state_file = Path(directory) / TRAIN_STATE_FILE
    if not state_file.is_file():  # every reported checkpoint has one; a resume must never guess
        raise RuntimeError(f"Checkpoint {directory} has no {TRAIN_STATE_FILE}; it cannot be resumed exactly.")
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    if ema is not None:
        ema.module.load_state_dict(saved["model"])
        model.load_state_dict(state["raw_model"])
    else:
        model.load_state_dict(saved["model"])
    optimizer.load_state_dict(state["optimizer"])
    load_scheduler_state(scheduler, state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], loader_generator)
    return state["epoch"], list(state.get("history", []))
