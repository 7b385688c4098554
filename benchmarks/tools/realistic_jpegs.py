"""A folder of realistic JPEGs for loader benchmarks: scikit-learn's two bundled photos, cut into pieces.

Each piece is a random crop of china.jpg or flower.jpg (427x640), resized so its long side is ~500 px
(the size of the seed reports' images) and re-encoded at JPEG quality 90. Classes are arbitrary; the
layout is the trial's DATA/train/<class>/*.jpg, DATA/val/<class>/*.jpg.

    python -m benchmarks.tools.realistic_jpegs --out /tmp/jpegs500 --per-class 40 --classes 10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def make_jpeg_folder(out: Path, *, classes: int = 10, per_class: int = 40, val_per_class: int = 5,
                     long_side: int = 500, seed: int = 0) -> Path:
    if (out / "train").is_dir():
        return out
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    for split, count in (("train", per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = out / split / f"c{k:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo = photos[rng.integers(len(photos))]
                w, h = photo.size
                cw, ch = int(w * rng.uniform(0.45, 1.0)), int(h * rng.uniform(0.45, 1.0))
                x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
                piece = photo.crop((x, y, x + cw, y + ch))
                scale = long_side / max(piece.size)
                piece = piece.resize((round(piece.width * scale), round(piece.height * scale)), Image.BICUBIC)
                piece.save(folder / f"{i:04d}.jpg", quality=90)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=40)
    args = p.parse_args()
    print(make_jpeg_folder(args.out, classes=args.classes, per_class=args.per_class))
