"""Progress within a training epoch: every N batches one line with the running loss, throughput and the time
left in the epoch, so a 10-minute epoch is not 10 minutes of silence.

    epoch 2/30 batch 50/220 | loss 1.2345 | 812 img/s | epoch left 21s

The loss is read from the device only on those batches (a .item() per batch would stall a GPU every step).
"""
from __future__ import annotations


class BatchProgress:
    def __init__(self, every: int, *, epoch: int, epochs: int, batches: int, printer):
        """epoch counts from 0 (the loop's); printer(line) is the sink's progress()."""
        self.every, self.epoch, self.epochs, self.batches = every, epoch, epochs, batches
        self.printer = printer

    def due(self, batch: int) -> bool:
        """batch counts from 1; no line on the epoch's last batch: the epoch line follows it."""
        return self.every > 0 and batch % self.every == 0 and batch < self.batches

    def line(self, batch: int, images: int, mean_loss: float, seconds: float) -> str:
        rate = images / seconds if seconds > 0 else 0.0
        left = seconds / batch * (self.batches - batch)
        return (f"epoch {self.epoch + 1}/{self.epochs} batch {batch}/{self.batches} | loss {mean_loss:.4f} | "
                f"{rate:.0f} img/s | epoch left {left:.0f}s")

    def report(self, batch: int, images: int, mean_loss: float, seconds: float) -> None:
        self.printer(self.line(batch, images, mean_loss, seconds))
