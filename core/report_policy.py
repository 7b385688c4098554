"""Which epochs a trial reports to the search, and how the epochs in between still reach it.

Every `tune.report` is one round trip through the search driver's single loop (Tune's result processing,
loggers, checkpoint bookkeeping, scheduler, searcher) and blocks the trial until the driver has taken it.
At 1,024 GPUs that loop is the bottleneck (docs/benchmarks-history.md, "The driver at scale"), yet ASHA decides only on
its rung epochs. With `report_epochs` set to those epochs a trial reports only on
  - a rung epoch (the scheduler's decision needs the value then),
  - an epoch with a checkpoint (core/checkpoint_policy.py: Tune must persist and rank it),
  - its last epoch;
the metrics of the epochs in between travel in the next report under EPOCHS_BETWEEN, so the study's
per-epoch values, TensorBoard's curves and metrics.jsonl still hold every epoch (`expand`), at a third of
the round trips with the full space's checkpoint every 3rd epoch. What it costs: the search hears of those
epochs one report late, and a trial that crashes retrains them without having reported them.

`report_epochs = "every"` (the default) reports every epoch.

`checkpoint_after_decision` (with report_epochs listing the decision epochs): on a decision epoch that also
has a checkpoint due (not the last), the trial reports the metrics first and saves its checkpoint only if the
scheduler lets it go on, in a second report of the same epoch marked CHECKPOINT_OF_REPORTED_EPOCH; `expand`
gives no rows for it, so every consumer of the per-epoch rows sees each epoch once. A trial ASHA stops at a
rung never writes or uploads that checkpoint (most trials: ASHA stops 2/3 at each rung).
"""
from __future__ import annotations

EVERY = "every"
EPOCHS_BETWEEN = "epochs_between"
CHECKPOINT_OF_REPORTED_EPOCH = "checkpoint_of_reported_epoch"


def parse_report_epochs(text: str) -> frozenset[int] | None:
    """None for "every"; else the comma-separated epochs ("" = none besides checkpoints and the last).
    Raises ValueError naming what is wrong."""
    text = text.strip()
    if text == EVERY:
        return None
    epochs = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{part!r} is not an epoch (a whole number >= 1); give 'every' or epochs like '3,9,27'")
        epochs.add(int(part))
    return frozenset(epochs)


def report_due(epoch: int, *, epochs: int, report_epochs: frozenset[int] | None, checkpoint: bool) -> bool:
    """epoch counts from 1; `checkpoint`: this epoch saves one (it must reach Tune to be persisted)."""
    return report_epochs is None or checkpoint or epoch == epochs or epoch in report_epochs


def with_epochs_between(metrics: dict, between: list[dict]) -> dict:
    return {**metrics, EPOCHS_BETWEEN: list(between)} if between else metrics


def decide_before_checkpoint(epoch: int, *, epochs: int, report_epochs: frozenset[int] | None,
                             after_decision: bool) -> bool:
    """With checkpoint_after_decision: this checkpoint epoch is one the scheduler decides on (and not the last),
    so the metrics go first and the checkpoint follows only if the trial goes on."""
    return after_decision and report_epochs is not None and epoch in report_epochs and epoch < epochs


def checkpoint_of_reported_epoch(metrics: dict) -> dict:
    """The second report of a decided epoch: its metrics again (Tune ranks the checkpoint by them), marked."""
    return {**metrics, CHECKPOINT_OF_REPORTED_EPOCH: True}


def expand(result: dict) -> list[dict]:
    """The per-epoch rows one reported result stands for, oldest first: the epochs in between, then the
    result itself (without EPOCHS_BETWEEN); none for the checkpoint of an epoch already reported."""
    if result.get(CHECKPOINT_OF_REPORTED_EPOCH):
        return []
    between = result.get(EPOCHS_BETWEEN) or []
    own = {k: v for k, v in result.items() if k != EPOCHS_BETWEEN}
    return [*between, own]
