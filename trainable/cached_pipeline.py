"""The fast input pipeline (loader='cache'): uint8 from the node's decoded cache, float only on the device.

Per image, in the DataLoader workers, on uint8 tensors (no decode, no float math on the CPU):
    train: RandomResizedCrop -> augment policy          eval: resize short side -> center crop
Per batch, on the device (the GPU when there is one):
    flips -> to float -> normalise -> random erasing (-> mixup/cutmix, in the train loop)

Differences from the PIL pipeline (trainable/transforms.py), all distributional, none in kind:
  - images were resized once to the cache's short side (bicubic, antialiased) before any crop;
  - flips happen after the policy instead of before (the policies' ops are mirror-symmetric in
    distribution: shear, translate and rotate draw their sign at random);
  - the policies are torchvision's tensor versions: trivialaugment is the same TrivialAugmentWide;
    randaugment is RandAugment(2 ops, magnitude 27 of 31 bins = timm's m9 of 10, no magnitude noise,
    torchvision's op list); autoaugment is the same paper ImageNet policy as timm's 'original'.
"""
from __future__ import annotations

from typing import Sequence

from timm.data.random_erasing import RandomErasing
import torch
from torchvision.transforms import v2

from trainable.config import TrialConfig
from trainable.decoded_cache import DecodedImages

_INTERPOLATION = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}


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


def _policy(cfg: TrialConfig):
    if cfg.augment == "trivialaugment":
        return v2.TrivialAugmentWide()
    if cfg.augment == "randaugment":
        return v2.RandAugment(num_ops=2, magnitude=27, num_magnitude_bins=31)
    if cfg.augment == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    return None


def train_image_transform(cfg: TrialConfig, data_config: dict):
    crop = v2.RandomResizedCrop(cfg.train_size, scale=(cfg.scale_min, 1.0),
                                interpolation=_INTERPOLATION.get(data_config["interpolation"], v2.InterpolationMode.BICUBIC),
                                antialias=True)
    policy = _policy(cfg)
    return v2.Compose([crop, policy]) if policy is not None else crop


def eval_image_transform(cfg: TrialConfig, data_config: dict, size: int | None = None):
    size = size or cfg.eval_size
    return v2.Compose([
        # timm's eval transform: resize the short side to size / crop_pct, then center-crop size.
        v2.Resize(int(size / cfg.crop_pct),
                  interpolation=_INTERPOLATION.get(data_config["interpolation"], v2.InterpolationMode.BICUBIC),
                  antialias=True),
        v2.CenterCrop(size),
    ])


class DeviceBatchTransform:
    """uint8 (B, 3, H, W) on the device -> normalised float, with flips and random erasing in training."""

    def __init__(self, data_config: dict, device: torch.device, *, hflip: float = 0.0, vflip: float = 0.0,
                 random_erasing: float = 0.0):
        std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1)
        mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std  # (x/255 - mean)/std as one multiply-add
        self.hflip, self.vflip = hflip, vflip
        self.erase = (RandomErasing(random_erasing, mode="pixel", device=device)
                      if random_erasing > 0 else None)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = self._flip(self._flip(images, self.hflip, -1), self.vflip, -2)
        x = torch.addcmul(-self.shift, images.float(), self.scale)
        if self.erase is not None:
            x = self.erase(x)
        return x

    @staticmethod
    def _flip(images: torch.Tensor, p: float, dim: int) -> torch.Tensor:
        if p <= 0:
            return images
        # Drawn on the CPU generator: the checkpointed RNG state then covers it on any device.
        chosen = (torch.rand(images.shape[0]) < p).to(images.device, non_blocking=True)
        return torch.where(chosen.view(-1, 1, 1, 1), images.flip(dim), images)
