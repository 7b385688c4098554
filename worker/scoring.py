"""A member's logits: its checkpoint, read from the run's storage, rebuilt into a model and run over the
dataset exactly as its trial indexed it. This is the torch side of the ensemble: it runs in a Ray task
next to the trials' resources (ensemble/tasks.py, worker/ensemble_tasks.py), or in-process when no Ray is up.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.config import TrialConfig
from core.data import index_dataset, resolve_data_root
from core.errors import EnsembleError, UserError
from core.files import MODEL_FILE
from core.inference import Inference, data_values
from core.storage import Location, read_model_file
from core.subsets import apply_subset, pooled
from trainable.decoded_cache import ensure_decoded
from trainable.eval_pipeline import cache_side, eval_loader
from trainable.loop import StepSettings, predict_logits
from trainable.model import build_model, count_parameters, uses_channels_last
from trainable.trial import pick_amp_dtype, pick_device


class FlipAveraged(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(torch.flip(x, dims=[3]))) / 2


@dataclass
class Member:
    """A checkpoint rebuilt into an evaluable model."""

    model: nn.Module
    cfg: TrialConfig  # as rebuilt for inference (pretrained off)
    config: dict      # as the trial ran
    data_config: dict
    classes: list[str]

    @classmethod
    def load(cls, location: Location) -> "Member":
        """Raises whatever a missing, truncated or foreign file raises: callers decide whether to skip."""
        # weights_only=False: the file holds plain dicts and the resolved config; load only runs you trust.
        saved = torch.load(io.BytesIO(read_model_file(location)), map_location="cpu", weights_only=False)
        # No pretrained download: the checkpoint's weights replace them anyway.
        cfg = TrialConfig.from_dict({**saved["config"], "pretrained": False, "weights_file": ""})
        model = build_model(cfg, len(saved["classes"]))
        model.load_state_dict(saved["model"])
        return cls(model, cfg, saved["config"], saved["data_config"], list(saved["classes"]))

    def logits(self, samples, inference: Inference, decoded=None) -> np.ndarray:
        """Logits [N, C] in the order of `samples` ((path, label) pairs or bare paths); `decoded`: for
        loader=cache, a decoded cache that holds them."""
        if not samples:
            return np.zeros((0, len(self.classes)), np.float32)
        device = pick_device()
        channels_last = device.type == "cuda" and uses_channels_last(self.cfg)  # as the trial evaluated
        step = StepSettings(device=device, amp_dtype=pick_amp_dtype(self.cfg, device), channels_last=channels_last)
        # The config's own eval pipeline (pil or cache), the one its trial's val_acc came from.
        loader = eval_loader(self.cfg, samples, self.data_config, device, size=inference.size, decoded=decoded)
        self.model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        net = FlipAveraged(self.model) if inference.flip else self.model
        logits, _ = predict_logits(net, loader, step)
        return logits.numpy()


def dataset_lists(config: dict, data: str | None = None) -> dict:
    """The dataset exactly as the trial saw it (same hold-out seed, fraction and size filter; a refit model's
    held-out fold or out-of-bag images as its val): {"root", "classes", "val_samples", "test_files",
    "pooled_samples"} (pooled: train+val, the set refit folds and bags are drawn from). `data` overrides a
    dataset that moved."""
    cfg = TrialConfig.from_dict(data_values(config) | ({"data": data} if data else {}))
    try:
        index = index_dataset(resolve_data_root(cfg.data), val_fraction=cfg.val_fraction, seed=cfg.seed,
                              min_image_side=cfg.min_image_side, warn=lambda _: None)
    except UserError as err:
        hint = "" if data else " The trials were trained on this data; if it has moved, pass --data."
        raise EnsembleError(f"{err}{hint}") from err
    pooled_samples = pooled(index)
    index = apply_subset(index, cfg.subset, cfg.subset_seed)
    return {"root": str(index.root), "classes": list(index.classes), "val_samples": [list(s) for s in index.val],
            "test_files": list(index.test), "pooled_samples": [list(s) for s in pooled_samples]}


def score_candidate(trial_id: str, location: Location, inference: Inference, data: str | None = None) -> dict:
    """A Candidate's fields as a payload of plain types and arrays, or {"skip": reason} for a checkpoint
    that cannot be loaded. Also where it ran (node, pid, device), for the record and the tests."""
    try:
        member = Member.load(location)
    except Exception as err:  # truncated, corrupt, foreign: any of them means "cannot use this one"
        return {"skip": f"{location}/{MODEL_FILE} cannot be loaded ({type(err).__name__}: {err})"}
    lists = dataset_lists(member.config, data)
    if member.classes != lists["classes"]:
        raise EnsembleError(f"Trial {trial_id} was trained on classes {member.classes[:5]}..., but "
                            f"{lists['root']} now has {lists['classes'][:5]}...; its predictions would be "
                            "mislabelled. Point --data at the dataset the search used.")
    val, test = lists["val_samples"], lists["test_files"]
    decoded = None
    if member.cfg.loader == "cache":  # one decoded cache for val and test, shared by the members scored on this node
        # A refit model's val is its own fold: decode the pooled set once for all of them instead.
        to_decode = lists["pooled_samples"] if member.cfg.subset else val
        decoded = ensure_decoded([p for p, _ in to_decode] + test, cache_side(member.cfg, inference.size),
                                 workers=max(member.cfg.num_workers, 1))
    return {
        "trial_id": trial_id, "checkpoint": str(location), "config": member.config, "classes": member.classes,
        "param_count": count_parameters(member.model),
        "val_samples": val, "val_logits": member.logits(val, inference, decoded),
        "test_files": test, "test_logits": member.logits(test, inference, decoded),
        "data_root": lists["root"], "scored_on": {"pid": os.getpid(), "node_id": _node_id(), "device": pick_device().type},
    }


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def member_logits(trial_id: str, location: Location, classes: list[str], files: list[str], inference: Inference) -> dict:
    """A saved ensemble member's logits on `files` (python -m ensemble.predict): {"logits": [N, C] array}."""
    try:
        member = Member.load(location)
    except Exception as err:
        raise EnsembleError(f"Ensemble member {trial_id}'s checkpoint {location} cannot be loaded "
                            f"({type(err).__name__}: {err}); rebuild the ensemble with python -m ensemble.") from err
    if member.classes != classes:
        raise EnsembleError(f"Ensemble member {trial_id}'s checkpoint has other classes than the ensemble; it was "
                            "overwritten since. Rebuild the ensemble with python -m ensemble.")
    return {"logits": member.logits(files, inference)}
