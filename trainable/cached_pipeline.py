"""The fast input pipeline (loader='cache'): uint8 from the node's decoded cache, float only on the device.

Per image, in the DataLoader workers, on uint8 tensors (no decode, no float math on the CPU):
    train: RandomResizedCrop -> flips -> augment policy   eval: resize short side -> center crop
Per batch, on the device (the GPU when there is one):
    to float -> normalise -> random erasing (-> mixup/cutmix, in the train loop)

The augment policies are the PIL pipeline's own objects (timm's RandAugment/AutoAugment,
torchvision's TrivialAugmentWide), run on a PIL view of the 224 px uint8 crop: PIL's C ops are as
fast as torchvision's tensor versions for TrivialAugment and faster for RandAugment, and the policies
stay exactly those of loader='pil'. The one difference from loader='pil': images were resized once to
the cache's short side (bicubic, antialiased) before any crop.
"""
from __future__ import annotations

from typing import Sequence

from timm.data.random_erasing import RandomErasing
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from trainable.config import TrialConfig
from trainable.decoded_cache import DecodedImages
from trainable.transforms import augment_policy

_ANTIALIASED = ("bilinear", "bicubic")


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, *size). F.interpolate has a native uint8 antialiased path: ~2x
    torchvision's v2 resize on this kind of input (benchmarks/loader_throughput.py)."""
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


class ResizeCenterCropU8:
    """timm's eval transform on a uint8 tensor: short side to size / crop_pct, then center-crop size."""

    def __init__(self, size: int, crop_pct: float, interpolation: str):
        self.size, self.short, self.mode = size, int(size / crop_pct), interpolation

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        # torchvision's Resize(int): the short side becomes exactly `short`, the long one is truncated.
        new = (self.short, int(self.short * w / h)) if h <= w else (int(self.short * h / w), self.short)
        image = _resize(image, new, self.mode)
        top, left = int(round((new[0] - self.size) / 2.0)), int(round((new[1] - self.size) / 2.0))
        return image[:, top:top + self.size, left:left + self.size]


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
    return ResizeCenterCropU8(size or cfg.eval_size, cfg.crop_pct, data_config["interpolation"])


class DeviceBatchTransform:
    """uint8 (B, 3, H, W) on the device -> normalised float, with random erasing in training."""

    def __init__(self, data_config: dict, device: torch.device, *, random_erasing: float = 0.0):
        std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1)
        mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std  # (x/255 - mean)/std as one multiply-add
        self.erase = (RandomErasing(random_erasing, mode="pixel", device=device)
                      if random_erasing > 0 else None)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().mul_(self.scale).sub_(self.shift)  # in place: half the time of addcmul on a CPU
        if self.erase is not None:
            x = self.erase(x)
        return x
