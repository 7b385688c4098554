"""The eval pipeline of a config: how a trial's val images reach its model, and how the ensemble scores
the same checkpoint later. One function for both, so a member's score can only differ from its trial's
if its weights do.

    loader=pil    timm's eval transform per image in the workers: decode, resize, center-crop, normalise
    loader=cache  the node's decoded uint8 memory map (trainable.decoded_cache), resized and cropped as uint8
                  in the workers, made float and normalised on the device by timm's PrefetchLoader

`size` (TTA at a larger crop) keeps the config's crop_pct; for loader=cache it reads a cache at least
that large, so a larger crop is never an upscale of a smaller cache.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from trainable.cached_pipeline import CachedImageDataset, eval_image_transform, on_device
from core.config import TrialConfig
from core.data import ImageListDataset
from trainable.decoded_cache import DecodedImages, ensure_decoded
from trainable.transforms import eval_transform


def eval_loader(cfg: TrialConfig, samples: Sequence[tuple[str, int]] | Sequence[str], data_config: dict,
                device: torch.device, *, size: int | None = None, decoded: DecodedImages | None = None):
    """Batches of (images ready for the model on `device` or the CPU, labels) in the order of `samples`:
    (path, label) pairs, or bare paths (label -1). `decoded`: a cache already open that holds them."""
    samples = [(str(s), -1) if isinstance(s, (str, os.PathLike)) else (str(s[0]), int(s[1])) for s in samples]
    options = {"batch_size": cfg.batch_size, "shuffle": False, "num_workers": cfg.num_workers,
               "pin_memory": device.type == "cuda", "persistent_workers": False}
    if cfg.loader == "pil":
        return DataLoader(ImageListDataset(samples, eval_transform(cfg, data_config, size=size)), **options)
    if decoded is None:
        decoded = ensure_decoded([p for p, _ in samples], cache_side(cfg, size), workers=max(cfg.num_workers, 1))
    dataset = CachedImageDataset(decoded, samples, eval_image_transform(cfg, data_config, size=size))
    return on_device(DataLoader(dataset, **options), data_config, device)


def cache_side(cfg: TrialConfig, size: int | None = None) -> int:
    """The short side loader=cache stores images at: the trial's own, or larger for a larger eval crop."""
    side = cfg.cache_short_side or cfg.required_cache_side
    return side if size is None else max(side, int(size / cfg.crop_pct))
