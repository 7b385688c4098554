"""Loader images/s per CPU core at 224 px: the naive PIL ImageFolder loader against the decoded cache.

One process, one torch thread, num_workers=0: images/s here is images/s per core (a DataLoader with
k workers scales it by about k). Each loader delivers what the train step consumes:
  naive  torchvision ImageFolder: JPEG decode, RandomResizedCrop, flip, ToTensor, Normalize (the
         seed reports' loader);
  pil    this project's loader='pil' (timm transforms): same work, timm's implementation;
  cache  loader='cache': uint8 crop/flip/resize (+ policy) from the node's decoded memory map: what
         a GPU node's loader cores do (the batch's float conversion + normalise then run on the GPU);
  cache+finish  the same through the trial's timm PrefetchLoader, float conversion + normalise on this
         CPU: a CPU-only node's cost.
Runs alternate (naive, pil, cache, naive, ...) so machine noise hits all; ratios are of medians.
The cache's one-off build is timed separately: it is paid once per node, not per epoch or trial.

    python -m benchmarks.tools.loader_throughput --images 400 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

from benchmarks.record import write_record
from benchmarks.tools.realistic_jpegs import make_jpeg_folder
from trainable.cached_pipeline import CachedImageDataset, on_device, train_image_transform
from core.config import TrialConfig
from core.data import ImageListDataset, index_dataset
from trainable.decoded_cache import ensure_decoded
from trainable.transforms import train_transform

DATA_CONFIG = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bicubic"}


def images_per_s(loader) -> float:
    seen, start = 0, time.perf_counter()
    for images, _ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def naive_loader(root: Path, cfg: TrialConfig) -> DataLoader:
    policy = [T.TrivialAugmentWide()] if cfg.augment == "trivialaugment" else []
    transform = T.Compose([T.RandomResizedCrop(cfg.train_size), T.RandomHorizontalFlip(), *policy, T.ToTensor(),
                           T.Normalize(DATA_CONFIG["mean"], DATA_CONFIG["std"])])
    return DataLoader(datasets.ImageFolder(str(root / "train"), transform), batch_size=cfg.batch_size, shuffle=True)


def pil_loader(index, cfg: TrialConfig, workers: int = 0) -> DataLoader:
    """loader='pil': the trial's timm transforms on decoded JPEGs."""
    return DataLoader(ImageListDataset(index.train, train_transform(cfg, DATA_CONFIG)), batch_size=cfg.batch_size,
                      shuffle=True, num_workers=workers)


def cache_loader(decoded, index, cfg: TrialConfig, workers: int = 0) -> DataLoader:
    """loader='cache' before the device: uint8 crops from the decoded memory map."""
    return DataLoader(CachedImageDataset(decoded, index.train, train_image_transform(cfg, DATA_CONFIG)),
                      batch_size=cfg.batch_size, shuffle=True, num_workers=workers)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a JPEG image folder; default: cut from sklearn's sample photos")
    p.add_argument("--images", type=int, default=400, help="train images to generate (10 classes)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--augment", nargs="+", default=["none", "trivialaugment"])
    args = p.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or make_jpeg_folder(Path(tmp) / "jpegs", classes=10, per_class=args.images // 10)
        index = index_dataset(root, warn=lambda _: None)
        base = TrialConfig(train_size=args.size, eval_size=args.size, batch_size=args.batch_size, num_workers=0)
        started = time.perf_counter()
        decoded = ensure_decoded([p for p, _ in index.train + index.val], base.required_cache_side, workers=1)
        build_s = time.perf_counter() - started
        rows = []
        for augment in args.augment:
            cfg = TrialConfig(**{**base.to_dict(), "augment": augment})
            runs = {"naive": [], "pil": [], "cache": [], "cache+finish": []}
            for _ in range(args.repeats):
                runs["naive"].append(images_per_s(naive_loader(root, cfg)))
                runs["pil"].append(images_per_s(pil_loader(index, cfg)))
                cached = cache_loader(decoded, index, cfg)
                runs["cache"].append(images_per_s(cached))
                runs["cache+finish"].append(images_per_s(on_device(cached, DATA_CONFIG, torch.device("cpu"))))
                print(augment, {k: round(v[-1], 1) for k, v in runs.items()}, flush=True)
            med = {k: statistics.median(v) for k, v in runs.items()}
            rows.append({"augment": augment, **{f"{k}_img_s_per_core": round(v, 1) for k, v in med.items()},
                         "cache_vs_naive": round(med["cache"] / med["naive"], 2),
                         "cache+finish_vs_naive": round(med["cache+finish"] / med["naive"], 2),
                         "pil_vs_naive": round(med["pil"] / med["naive"], 2)})
        figures = {"size": args.size, "train_images": len(index.train), "batch_size": args.batch_size,
                   "cache_build_s": round(build_s, 2), "cache_build_img_s": round(len(decoded) / build_s, 1),
                   "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
        print(json.dumps(figures, indent=1))
        write_record("loader_throughput", figures)


if __name__ == "__main__":
    main()
