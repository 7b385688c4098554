"""The fast input pipeline (loader='cache'): uint8 from the node's decoded cache, float only on the device.

Per image, in the DataLoader workers, on uint8 tensors (no decode, no float math on the CPU):
    train: RandomResizedCrop -> flips -> augment policy   eval: resize short side -> center crop
Per batch, on the device (the GPU when there is one), by timm's PrefetchLoader:
    to float -> normalise -> random erasing (-> mixup/cutmix, in the train loop)

The augment policies are the PIL pipeline's own objects (timm's RandAugment/AutoAugment,
torchvision's TrivialAugmentWide), run on a PIL view of the 224 px uint8 crop: PIL's C ops are as
fast as torchvision's tensor versions for TrivialAugment and faster for RandAugment, and the policies
stay exactly those of loader='pil'. The one difference from loader='pil': images were resized once to
the cache's short side (bicubic, antialiased) before any crop.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.loader import PrefetchLoader
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from core.config import TrialConfig
from trainable.decoded_cache import DecodedImages
from trainable.transforms import augment_policy

_ANTIALIASED = ("bilinear", "bicubic")


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, *size). Called directly, F.interpolate's native uint8 antialiased path was
    about twice as fast as torchvision's resized_crop on memory-mapped HWC input (one-off timing)."""
    mode = mode if mode in _ANTIALIASED else "bilinear"
    return F.interpolate(image[None], size=size, mode=mode, antialias=True, align_corners=False)[0]


class RandomResizedCropFlipU8:
    """timm's RandomResizedCrop (same area/ratio sampling, torch RNG) and flips, on a uint8 tensor.

    Flipping here, per image in the workers, costs a fraction of a batched flip on the CPU
    (a flip of the small crop, before the resize) and keeps timm's order: crop, flip, policy."""

    def __init__(self, size: int, scale: tuple[float, float], interpolation: str, hflip: float, vflip: float):
        self.size, self.scale, self.ratio, self.mode = size, scale, (3 / 4, 4 / 3), interpolation
        self.hflip, self.vflip = hflip, vflip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        crop = image[:, top:top + h, left:left + w]
        if self.hflip > 0 and torch.rand(1).item() < self.hflip:
            crop = crop.flip(-1)
        if self.vflip > 0 and torch.rand(1).item() < self.vflip:
            crop = crop.flip(-2)
        return _resize(crop, (self.size, self.size), self.mode)


class CachedImageDataset(torch.utils.data.Dataset):
    """(path, label) samples served from a DecodedImages cache as uint8 (3, H, W) tensors."""

    def __init__(self, decoded: DecodedImages, samples: Sequence[tuple[str, int]], transform):
        self.decoded = decoded
        self.positions = [decoded.position(path) for path, _ in samples]
        self.labels = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        return self.transform(self.decoded.image(self.positions[i])), self.labels[i]


class PolicyOnU8:
    """A PIL augment policy applied to a uint8 (3, H, W) tensor."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        augmented = self.policy(Image.fromarray(image.permute(1, 2, 0).numpy()))
        return torch.from_numpy(np.array(augmented)).permute(2, 0, 1)


def train_image_transform(cfg: TrialConfig, data_config: dict):
    crop = RandomResizedCropFlipU8(cfg.train_size, (cfg.scale_min, 1.0), data_config["interpolation"],
                                   cfg.hflip, cfg.vflip)
    policy = augment_policy(cfg, data_config)
    return T.Compose([crop, PolicyOnU8(policy)]) if policy is not None else crop


def eval_image_transform(cfg: TrialConfig, data_config: dict, size: int | None = None):
    """timm's eval transform, on a uint8 tensor: short side to size / crop_pct, then center-crop
    (size: eval_size unless given, e.g. a larger TTA crop)."""
    size = size or cfg.eval_size
    return T.Compose([
        T.Resize(int(size / cfg.crop_pct), interpolation=str_to_interp_mode(data_config["interpolation"]),
                 antialias=True),
        T.CenterCrop(size),
    ])


def on_device(loader, data_config: dict, device: torch.device, *, random_erasing: float = 0.0) -> PrefetchLoader:
    """timm's PrefetchLoader: uint8 batches to the device (on a side stream on CUDA, overlapping the
    step), then float, normalisation and random erasing there."""
    return PrefetchLoader(loader, mean=data_config["mean"], std=data_config["std"], device=device,
                          re_prob=random_erasing, re_mode="pixel")
