"""Where a trial's per-epoch metrics and checkpoints go.

A reporter has two methods: `checkpoint_to_resume()` (a directory or None) and
`report(metrics, checkpoint_dir)`. The trial writes each checkpoint into a temporary directory and
hands it over; the reporter persists it. `LocalReporter` writes stdout + metrics.jsonl + epoch
directories; the Ray Tune reporter lives in search/ so that trainable/ never imports Ray.
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from trainable.checkpoint import MODEL_FILE, TRAIN_STATE_FILE


class LocalReporter:
    """out_dir/metrics.jsonl, out_dir/checkpoints/epoch_NNNN/ (the latest `keep` plus the best by val_acc)."""

    def __init__(self, out_dir: Path, resume: bool = False, keep: int = 2, printer=print):
        self.out_dir = Path(out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.resume = resume
        self.keep = keep
        self.printer = printer

    @contextmanager
    def checkpoint_to_resume(self):
        yield self.latest() if self.resume else None

    def latest(self) -> Path | None:
        complete = [d for d in self._epoch_dirs() if (d / MODEL_FILE).exists() and (d / TRAIN_STATE_FILE).exists()]
        return complete[-1] if complete else None

    def report(self, metrics: dict, checkpoint_dir: Path) -> None:
        self.ckpt_root.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_root / f"epoch_{metrics['epoch']:04d}"
        if final.exists():  # re-running an epoch after a resume: the new one replaces it
            shutil.rmtree(final)
        # A directory rename is atomic: a killed run never leaves a half-written checkpoint behind.
        shutil.move(str(checkpoint_dir), str(final))
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self._prune()
        self.printer(format_metrics(metrics))

    def _epoch_dirs(self) -> list[Path]:
        return sorted(self.ckpt_root.glob("epoch_*")) if self.ckpt_root.exists() else []

    def _prune(self) -> None:
        dirs = self._epoch_dirs()
        history = {}
        for line in (self.out_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            history[row["epoch"]] = row.get("val_acc", 0.0)
        best = max(history, key=lambda e: (history[e], -e))
        keep = set(dirs[-self.keep:]) | {self.ckpt_root / f"epoch_{best:04d}"}
        for d in dirs:
            if d not in keep:
                shutil.rmtree(d, ignore_errors=True)


def format_metrics(m: dict) -> str:
    parts = [f"epoch {m['epoch']:>3}"]
    for key in ("train_loss", "val_loss", "val_acc", "val_macro_f1", "val_top5_acc"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"lr {m['lr']:.2e}")
    parts.append(f"{m['epoch_seconds']:.1f}s")
    parts.append(f"{m['train_images_per_s']:.0f} img/s")
    return " | ".join(parts)
