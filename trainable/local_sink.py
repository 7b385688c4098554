"""`python -m trainable`'s sink: stdout, OUT/metrics.jsonl and OUT/checkpoints/epoch_NNNN/ (core/epoch_reporter.py)."""
from __future__ import annotations

import json
import math
import shutil
from contextlib import nullcontext
from pathlib import Path

from core import metrics as metric_registry
from core.epoch_reporter import Sink
from core.files import MODEL_FILE, TRAIN_STATE_FILE
from core.report_policy import expand


class LocalSink(Sink):
    """out_dir/metrics.jsonl and out_dir/checkpoints/epoch_NNNN/: the latest `keep` plus the best by the trial's
    metric. The folder (with config.json) is created only at the first report, so a run that fails before
    training leaves nothing behind."""

    def __init__(self, out_dir: Path, resume: bool = False, keep: int = 2, printer=print, config: dict | None = None):
        self.out_dir = Path(out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.resume = resume
        self.keep = keep
        self.printer = printer
        self.config = config  # written to OUT/config.json with the first report
        self.metric = (config or {}).get("metric", "val_acc")
        self._reported = False

    def checkpoints_to_resume(self):
        """Every epoch folder, newest first (the trial reads them and skips damaged ones)."""
        if not self.resume:
            return []
        return [nullcontext(d) for d in reversed(self._epoch_dirs())]

    def latest(self) -> Path | None:
        complete = [d for d in self._epoch_dirs() if (d / MODEL_FILE).exists() and (d / TRAIN_STATE_FILE).exists()]
        return complete[-1] if complete else None

    def send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        rows = expand(metrics)  # the epochs not reported on their own (report_epochs), then this one
        if not self._reported:
            self._reported = True
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
            if self.config is not None:
                (self.out_dir / "config.json").write_text(json.dumps(self.config, indent=2))
            self._forget_rows_from(rows[0]["epoch"] if rows else metrics["epoch"])
        final = self.ckpt_root / f"epoch_{metrics['epoch']:04d}"
        if final.exists():  # re-running an epoch after a resume: the new one replaces it
            shutil.rmtree(final)
        if checkpoint_dir is not None:
            # A folder rename is atomic: a killed run never leaves a half-written checkpoint behind.
            shutil.move(str(checkpoint_dir), str(final))
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        self._prune()
        for row in rows:
            self.printer(format_metrics(row))

    def _forget_rows_from(self, epoch: int) -> None:
        # A resumed run trains again the epochs after its checkpoint (metrics-only ones, or those after a
        # damaged checkpoint): one row per epoch.
        path = self.out_dir / "metrics.jsonl"
        if path.exists():
            rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] < epoch]
            path.write_text("".join(line + "\n" for line in rows))

    def _epoch_dirs(self) -> list[Path]:
        return sorted(self.ckpt_root.glob("epoch_*")) if self.ckpt_root.exists() else []

    def _prune(self) -> None:
        dirs = self._epoch_dirs()
        history = {}
        for line in (self.out_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            history[row["epoch"]] = row.get(self.metric, math.nan)
        with_dir = sorted(int(d.name.split("_")[1]) for d in dirs)
        best = metric_registry.best_index(self.metric, [history.get(e, math.nan) for e in with_dir])
        keep = set(dirs[-self.keep:]) | ({self.ckpt_root / f"epoch_{with_dir[best]:04d}"} if best is not None else set())
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
