"""What a search will cost before it runs: expected trial-epochs under ASHA, hence accelerator-hours, wall time
and dollars. Arithmetic only (no torch, Ray or Optuna): search/forecast.py feeds it the space and a calibration.

ASHA as Ray Tune runs it (ray/tune/schedulers/async_hyperband.py, one bracket): rungs at
grace_period * reduction_factor**k for k < int(log(max_t / grace) / log(rf) + 1); a trial reaching a rung is
stopped when its metric is below the (1 - 1/rf) percentile (numpy, linear interpolation) of the values recorded
at that rung *so far*; the first trial at a rung always continues; a trial at max_t ends. So the i-th arrival
at a rung is compared with the i before it, not with all N: small searches promote more than N / rf.

The model: sampled trials' metrics at a rung are exchangeable (any arrival order equally likely), so an
arrival with j sampled trials before it passes with probability (j - h) / (j + 1), h = (i - 1) * (1 - 1/rf)
being the cutoff's position among the i values recorded (exact for continuous i.i.d. values: the new value's
rank among the j + 1 is uniform and a gap split by the interpolation is split uniformly). Warm starts are
the first arrivals; by default they are exchangeable with the sampled trials (warm_best=False: on
spaces/quick.py the forecast is then 31 epochs, what the README's demo ran; taking them as better than every
sampled trial, so that they run to max_epochs and raise every cutoff, forecast 23). Passes are treated as independent (relative ranks of i.i.d. values are), and
the number reaching each rung is carried as a distribution, not a mean.

Where it errs (docs/cost.md): a trial good at one rung tends to stay good, and later arrivals at a rung passed
a higher cutoff at the one before, so they pass more often than exchangeable ones (on Tune's ASHA with
metrics fixed per trial, spaces/quick.py's settings run 35.6 epochs, not 31.4: tests/test_cost_forecast.py);
TPE's later trials are better than its first, so late arrivals pass more often
than exchangeable ones (more epochs than forecast); a weak warm start passes less (fewer); failed trials end
early (fewer); a trial whose metric ties is compared with `<`, so ties pass (more).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# On-demand Linux prices, us-west-2, USD per instance-hour, and GPUs per instance. Source: the AWS EC2 on-demand
# pricing page (aws.amazon.com/ec2/pricing/on-demand), as the README's "Costs" section quotes it; dated when
# it was copied, not re-checked since (no internet here): pass --gpu-hour-usd for today's or a spot price.
PRICE_TABLE_DATE = "2026-11 (AWS EC2 on-demand, us-west-2, Linux)"
INSTANCE_PRICES = {
    "g5.xlarge": (1.006, 1), "g5.2xlarge": (1.212, 1), "g5.4xlarge": (1.624, 1), "g5.8xlarge": (2.448, 1),
    "g5.12xlarge": (5.672, 4), "g5.24xlarge": (8.144, 4), "g5.48xlarge": (16.288, 8),
    "g6.xlarge": (0.805, 1), "g6.2xlarge": (0.978, 1), "g6.12xlarge": (4.602, 4),
    "p4d.24xlarge": (32.773, 8), "p5.48xlarge": (98.32, 8),
    "m6i.2xlarge": (0.384, 0),
}


def asha_rungs(grace_period: int, max_epochs: int, reduction_factor: float) -> list[int]:
    """The epochs where Tune's ASHA compares trials, exactly as its _Bracket builds them (one bracket), less
    any at or past max_epochs (a trial there ends anyway)."""
    count = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = [grace_period * reduction_factor ** k for k in range(count)]
    return [int(r) for r in rungs if r < max_epochs]


def pass_probability(j: int, warm: int, reduction_factor: float) -> float:
    """P(the next sampled arrival at a rung continues), with `j` sampled and `warm` warm-start values recorded."""
    i = j + warm
    if i == 0:
        return 1.0  # no cutoff yet
    h = (i - 1) * (1 - 1 / reduction_factor)
    return min(max(j - h, 0.0) / (j + 1), 1.0)


def _passed(dist: list[float], warm: int, rf: float) -> list[float]:
    """Distribution of how many of the sampled trials reaching a rung pass it, from the distribution of how
    many reach it (index = count)."""
    out = [0.0] * len(dist)
    passes = [1.0]  # distribution of passes among the first n arrivals, built one arrival at a time
    for n, weight in enumerate(dist):
        if n:
            p = pass_probability(n - 1, warm, rf)
            passes = [a * (1 - p) + b * p for a, b in zip(passes + [0.0], [0.0] + passes)]
        if weight:
            for k, q in enumerate(passes):
                out[k] += weight * q
    return out


@dataclass(frozen=True)
class EpochForecast:
    rungs: list[int]             # ASHA's milestones below max_epochs
    reaching: list[float]        # expected trials reaching each rung, then max_epochs (warm starts included)
    max_epochs: int
    trials: int
    warm: int
    sampled_epochs: float        # expected epochs of the sampled trials
    warm_epochs: float           # of the warm starts

    @property
    def trial_epochs(self) -> float:
        return self.sampled_epochs + self.warm_epochs

    @property
    def full_epochs(self) -> int:
        return self.trials * self.max_epochs


def expected_epochs(num_samples: int, grace_period: int, max_epochs: int, reduction_factor: float,
                    warm_starts: int = 0, warm_best: bool = False) -> EpochForecast:
    """warm_best: the warm starts beat every sampled trial at every rung; else all trials are exchangeable."""
    warm = min(warm_starts, num_samples) if warm_best else 0
    sampled = num_samples - warm
    rungs = asha_rungs(grace_period, max_epochs, reduction_factor)
    dist = [0.0] * sampled + [1.0]  # every sampled trial reaches the first rung (grace_period)
    means = [sampled]
    for _ in rungs:
        dist = _passed(dist, warm, reduction_factor)
        means.append(sum(k * q for k, q in enumerate(dist)))
    stops = [r * (means[k] - means[k + 1]) for k, r in enumerate(rungs)]
    sampled_epochs = sum(stops) + means[-1] * max_epochs
    return EpochForecast(rungs, [m + warm for m in means], max_epochs, num_samples, warm, sampled_epochs,
                         warm * max_epochs)


def instance_gpu_price(instance_type: str) -> float | None:
    """USD per GPU-hour of an instance type in the table, None when it is not there or has no GPU."""
    price, gpus = INSTANCE_PRICES.get(instance_type, (None, 0))
    return price / gpus if price is not None and gpus else None


@dataclass(frozen=True)
class CostForecast:
    """The forecast a plan prints and saves (plan.json "forecast")."""

    trials: int
    warm_starts: int
    rungs: list[int]
    reaching: list[float]
    trial_epochs: float
    full_epochs: int
    max_epochs: int
    epoch_seconds: float          # mean over the trials the space samples, warm starts weighted in
    start_seconds: float          # per trial: process, imports, model, data before the first epoch
    epoch_seconds_source: str     # "calibrated on cpu", "--epoch-seconds", ...
    trial_hours: float            # sum of trial wall times
    accelerator: str              # "GPU" or "CPU"
    per_trial: float              # GPUs (or CPUs) per trial
    accelerator_hours: float      # trial_hours * per_trial
    concurrency: int
    wall_hours: float
    usd_per_hour: float | None    # per GPU-hour (per CPU-hour on CPU)
    price_source: str
    by_backbone: dict = field(default_factory=dict)   # backbone -> seconds per epoch

    @property
    def usd(self) -> float | None:
        return None if self.usd_per_hour is None else self.accelerator_hours * self.usd_per_hour

    def to_dict(self) -> dict:
        return {**asdict(self), "usd": self.usd}

    def table(self) -> str:
        unit = f"{self.accelerator}-hours"
        cost = (f"{usd_text(self.usd)} at ${self.usd_per_hour:g}/{self.accelerator}-hour ({self.price_source})"
                if self.usd is not None else f"no price (--gpu-hour-usd, or --cluster-yaml with a known instance type)")
        reach = ", ".join(f"{n:.1f}@{r}" for n, r in zip(self.reaching, [*self.rungs, self.max_epochs]))
        lines = [
            "Forecast (expected, not a promise: docs/cost.md says where it errs)",
            f"  epochs     {self.trial_epochs:.0f} trial-epochs of {self.full_epochs} without ASHA "
            f"(trials reaching epoch: {reach})",
            f"  per epoch  {self.epoch_seconds:.1f} s ({self.epoch_seconds_source}) + {self.start_seconds:.0f} s to start "
            "each trial" + (f"; {_by_backbone(self.by_backbone)}" if len(set(self.by_backbone.values())) > 1 else ""),
            f"  {unit:<10} {self.accelerator_hours:.3g} ({self.trial_hours:.3g} trial-hours x {self.per_trial:g} "
            f"{self.accelerator} per trial)",
            f"  wall       {_duration(self.wall_hours)} at {self.concurrency} trials at once",
            f"  cost       {cost}",
        ]
        return "\n".join(lines)


def _by_backbone(seconds: dict) -> str:
    ranked = sorted(seconds.items(), key=lambda kv: kv[1])
    if len(ranked) > 4:  # one short line: the fastest and the slowest
        return f"{len(ranked)} backbones, {ranked[0][0]} {ranked[0][1]:.1f} s to {ranked[-1][0]} {ranked[-1][1]:.1f} s"
    return ", ".join(f"{name} {s:.1f} s" for name, s in ranked)


def usd_text(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.2g}"


def _duration(hours: float) -> str:
    minutes = hours * 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{hours:.1f} h"


def cost_forecast(epochs: EpochForecast, *, epoch_seconds: float, start_seconds: float, source: str,
                  per_trial: float, accelerator: str, concurrency: int, usd_per_hour: float | None,
                  price_source: str, warm_epoch_seconds: float | None = None,
                  by_backbone: dict | None = None) -> CostForecast:
    """epoch_seconds: a sampled trial's mean seconds per epoch; warm_epoch_seconds: the warm starts' mean."""
    warm_s = epoch_seconds if warm_epoch_seconds is None else warm_epoch_seconds
    seconds = epochs.sampled_epochs * epoch_seconds + epochs.warm_epochs * warm_s + epochs.trials * start_seconds
    trial_hours = seconds / 3600
    at_once = max(1, min(concurrency, epochs.trials))
    longest = (epochs.max_epochs * max(epoch_seconds, warm_s) + start_seconds) / 3600
    mean_epoch = ((epochs.sampled_epochs * epoch_seconds + epochs.warm_epochs * warm_s) / epochs.trial_epochs
                  if epochs.trial_epochs else epoch_seconds)
    return CostForecast(
        trials=epochs.trials, warm_starts=epochs.warm, rungs=epochs.rungs,
        reaching=[round(r, 2) for r in epochs.reaching], trial_epochs=round(epochs.trial_epochs, 2),
        full_epochs=epochs.full_epochs, max_epochs=epochs.max_epochs, epoch_seconds=round(mean_epoch, 3),
        start_seconds=round(start_seconds, 2), epoch_seconds_source=source, trial_hours=round(trial_hours, 5),
        accelerator=accelerator, per_trial=per_trial, accelerator_hours=round(trial_hours * per_trial, 5),
        concurrency=at_once, wall_hours=round(max(trial_hours / at_once, longest), 5),
        usd_per_hour=usd_per_hour, price_source=price_source, by_backbone=dict(by_backbone or {}))
