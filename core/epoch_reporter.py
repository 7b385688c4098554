"""What a trial reports when, and which epochs checkpoint: one reporter, and the sinks its reports go to.

train_trial makes one call per epoch, `EpochReporter.end_of_epoch(metrics, save)`. The reporter decides, from
the trial's config and the policies in core/:
  - whether the epoch writes a checkpoint (core/checkpoint_policy.py: its best `keep_checkpoints` by the
    trial's metric, every `resume_state_every` epochs, the last);
  - whether it reaches the search now (core/report_policy.py: every epoch, or with report_epochs only the
    scheduler's decision epochs, checkpoint epochs and the last; the epochs between travel with the next report);
  - with checkpoint_after_decision, whether the scheduler decides on the metrics before the checkpoint is written;
and hands each report to its sink: `send(metrics, checkpoint_dir)` (None on an epoch that reports metrics only).

A sink is where reports go: LocalSink (trainable/local_sink.py, `python -m trainable`: stdout, metrics.jsonl
and epoch folders), TuneSink and BackgroundTuneSink under Ray Tune (worker/tune_sink.py). Every sink has the whole interface; the
base class says what each method means.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, ContextManager

from core.checkpoint_policy import checkpoint_due
from core.config import TrialConfig
from core.errors import TrialStopped
from core.report_policy import (checkpoint_of_reported_epoch, decide_before_checkpoint, parse_report_epochs,
                                report_due, with_epochs_between)


class Sink:
    """Where a trial's reports go."""

    def checkpoints_to_resume(self) -> list[ContextManager[Path]]:
        """Context managers giving checkpoint folders, newest first (the trial falls back to an older one when the
        newest is damaged); each may download only when entered."""
        return []

    def warn(self, message: str) -> None:
        print(message, file=sys.stderr)

    def progress(self, line: str) -> None:
        """One line of progress within an epoch (every log_every_batches batches): where a person watches."""
        print(line, flush=True)

    def send(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Persist one report; a checkpoint_dir is the sink's to take (the trial deletes it afterwards)."""
        raise NotImplementedError

    def stopped(self) -> bool:
        """Whether the search has stopped this trial since its last report (asked between batches)."""
        return False

    def flush(self) -> None:
        """Wait until the last report is answered; raises TrialStopped if the answer stopped the trial."""

    def close(self) -> None:
        """After the last report, whatever the trial's end: the report in flight still arrives."""


class EpochReporter:
    def __init__(self, sink: Sink, cfg: TrialConfig, history: list[float]):
        """history: the trial's metric at every epoch already done (a resumed trial's, from its checkpoint)."""
        self.sink, self.cfg = sink, cfg
        self.history = list(history)
        self._report_epochs = parse_report_epochs(cfg.report_epochs)
        self._between: list[dict] = []  # epochs not reported yet: they travel with the next report

    def stopped(self) -> bool:
        return self.sink.stopped()

    def end_of_epoch(self, metrics: dict, save: Callable[[Path], None]) -> None:
        """metrics: the epoch's (`epoch` counts from 1); save(folder) writes its checkpoint into `folder`."""
        cfg, epoch = self.cfg, metrics["epoch"]
        due = checkpoint_due(epoch, metrics, self.history, epochs=cfg.epochs, every=cfg.resume_state_every,
                             keep=cfg.keep_checkpoints, metric=cfg.metric, new_bests=cfg.checkpoint_new_bests)
        self.history.append(metrics.get(cfg.metric, float("nan")))
        if not report_due(epoch, epochs=cfg.epochs, report_epochs=self._report_epochs, checkpoint=due):
            self._between.append(metrics)
            return
        reported, self._between = with_epochs_between(metrics, self._between), []
        if not due:
            self.sink.send(reported, None)  # metrics only: no bytes written, nothing to upload
            return
        if decide_before_checkpoint(epoch, epochs=cfg.epochs, report_epochs=self._report_epochs,
                                    after_decision=cfg.checkpoint_after_decision):
            # The scheduler decides on the metrics alone: a trial it stops here ends inside this report (or at the
            # flush, reporting in the background) and never writes this checkpoint.
            self.sink.send(reported, None)
            self.sink.flush()
            reported = checkpoint_of_reported_epoch(metrics)
        if self.sink.stopped():  # a stopped trial does not spend seconds writing a checkpoint no one takes
            raise TrialStopped("the search stopped this trial")
        folder = Path(tempfile.mkdtemp(prefix="trial-ckpt-"))
        try:
            save(folder)
            self.sink.send(reported, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
