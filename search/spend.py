"""What a running search has spent, against its forecast and its budget (--budget-gpu-hours / --budget-usd).

    LiveSpend        the driver's tally: per trial, its wall time x its accelerators (GPUs; CPUs on a CPU-only
                     search, labelled so), from Tune's trials at every step; status_fields() for the status line
    SpendCallback    a Tune Callback that feeds it (on_step_begin: every trial, restored ones included)
    BudgetStopper    a Tune Stopper that keeps the budget: once another trial's first rung would not fit next to
                     what is spent and what the running trials need to reach their next rung, running trials
                     stop at that rung, and the search ends when none runs. --resume with a larger budget
                     continues it.
    BudgetHold       the searcher's question before it asks Optuna for a trial (search/searcher.py): once the
                     budget is closed it asks none, so no trial starts that the budget cannot cover. (A trial
                     Tune had already created and queued for resources may still start: the stopper stops it
                     at its first report.)

Tune saves its RunConfig (callbacks and stopper) and the searcher with the experiment and restores them on
--resume, but the budget a --resume gives must win: these objects hold only the run's name and find this
process's LiveSpend in REGISTRY, where search/execute.py puts it before fitting.
"""
from __future__ import annotations

from ray.tune import Callback, Stopper

from core.errors import UserError

REGISTRY: dict[str, "LiveSpend"] = {}


class BudgetError(UserError):
    pass


def plan_budget(args, saved: dict | None, forecast: dict | None) -> dict | None:
    """{"hours", "usd", "usd_per_hour"}: the flags given, else the budget the search started with."""
    hours, usd = getattr(args, "budget_gpu_hours", None), getattr(args, "budget_usd", None)
    if hours is None and usd is None:
        return (saved or {}).get("budget")
    for flag, value in (("--budget-gpu-hours", hours), ("--budget-usd", usd)):
        if value is not None and value <= 0:
            raise BudgetError(f"{flag} is {value:g}, but a budget must be > 0.")
    price = ((forecast or {}).get("cost") or {}).get("usd_per_hour")
    if usd is not None and not price:
        raise BudgetError(f"--budget-usd {usd:g} needs a price per GPU-hour: add --gpu-hour-usd PRICE, or "
                          "--cluster-yaml cluster.yaml for the instance types' prices (or use --budget-gpu-hours).")
    limits = [h for h in (hours, usd / price if usd is not None else None) if h is not None]
    return {"hours": min(limits), "usd": usd, "usd_per_hour": price, "given_hours": hours}


def describe_budget(budget: dict) -> str:
    usd = f" (${budget['usd']:g} at ${budget['usd_per_hour']:g}/h)" if budget.get("usd") else ""
    return (f"  budget     {budget['hours']:.3g} accelerator-hours (CPU-hours without GPUs){usd}: no trial starts that it cannot cover; "
            "running trials finish their rung")


class LiveSpend:
    def __init__(self, *, per_trial: float, accelerator: str, rungs: list[int], max_epochs: int,
                 forecast: dict | None = None, budget: dict | None = None):
        self.per_trial, self.accelerator = per_trial, accelerator
        self.rungs, self.max_epochs = list(rungs), max_epochs
        cost = (forecast or {}).get("cost") or {}
        self.forecast_hours = cost.get("accelerator_hours")
        self.epoch_seconds = cost.get("epoch_seconds")   # until trials have measured their own
        self.start_seconds = cost.get("start_seconds", 0.0)
        self.usd_per_hour = (budget or {}).get("usd_per_hour") or cost.get("usd_per_hour")
        self.budget_hours = (budget or {}).get("hours")
        self.seconds: dict[str, float] = {}    # trial id -> its time_total_s
        self.epochs: dict[str, int] = {}
        self.running: set[str] = set()
        self.closed = False                    # the budget cannot cover another trial
        self.late: set[str] = set()            # trials that started after it closed
        self.stopped: dict[str, int] = {}      # trial id -> the epoch the budget stopped it at
        self.completed: set[str] = set()       # trials Tune has completed (or errored) in this run

    # --- fed by SpendCallback
    def update(self, trials) -> None:
        for trial in trials:
            result = trial.last_result or {}
            self.seconds[trial.trial_id] = float(result.get("time_total_s", 0.0) or 0.0)
            self.epochs[trial.trial_id] = int(result.get("epoch", 0) or 0)
        running = {t.trial_id for t in trials if t.status == "RUNNING"} - self.completed
        if self.closed:
            self.late |= running - self.running
        self.running = running
        if self.budget_hours is not None and not self.closed:
            self.closed = self.spent_hours() + self.committed_hours() + self.next_trial_hours() > self.budget_hours

    # --- what has been and will be spent
    def spent_hours(self) -> float:
        return sum(self.seconds.values()) / 3600 * self.per_trial

    def _epoch_s(self, trial_id: str | None = None) -> float:
        if trial_id and self.epochs.get(trial_id):
            return self.seconds[trial_id] / self.epochs[trial_id]
        measured = [self.seconds[t] / e for t, e in self.epochs.items() if e]
        if measured:
            return sum(measured) / len(measured)
        return self.epoch_seconds or 0.0

    def next_rung(self, epoch: int) -> int:
        return next((r for r in self.rungs if r > epoch), self.max_epochs)

    def committed_hours(self) -> float:
        """What the running trials need to reach their next rung."""
        return sum((self.next_rung(self.epochs.get(t, 0)) - self.epochs.get(t, 0)) * self._epoch_s(t)
                   for t in self.running) / 3600 * self.per_trial

    def next_trial_hours(self) -> float:
        first = self.rungs[0] if self.rungs else self.max_epochs
        return (self.start_seconds + first * self._epoch_s()) / 3600 * self.per_trial

    def usd(self, hours: float) -> float | None:
        return None if self.usd_per_hour is None else hours * self.usd_per_hour

    def status_fields(self) -> dict[str, str]:
        """For the status line: {"gpu_h": "1.2/3.4 forecast", "usd": "$3.10/$10 budget"} (cpu_h on CPU)."""
        spent = self.spent_hours()
        key = f"{self.accelerator.lower()}_h"
        against = [f"{self.forecast_hours:.3g} forecast" if self.forecast_hours is not None else None,
                   f"{self.budget_hours:.3g} budget" if self.budget_hours is not None else None]
        fields = {key: f"{spent:.3g}" + "".join(f"/{a}" for a in against if a)}
        if self.usd_per_hour is not None:
            usd_against = [f"${self.usd(self.forecast_hours):,.2f} forecast" if self.forecast_hours is not None
                           else None,
                           f"${self.usd(self.budget_hours):,.2f} budget" if self.budget_hours is not None else None]
            fields["usd"] = f"${self.usd(spent):,.2f}" + "".join(f"/{a}" for a in usd_against if a)
        if self.closed:
            fields["budget"] = "reached: running trials finish their rung"
        return fields

    def spent_text(self) -> str:
        hours = self.spent_hours()
        usd = self.usd(hours)
        label = f"{self.accelerator}-hours" + (" (no GPU: CPU-hours)" if self.accelerator == "CPU" else "")
        budget = f" of a {self.budget_hours:.3g} budget" if self.budget_hours is not None else ""
        forecast = f"; forecast {self.forecast_hours:.3g}" if self.forecast_hours is not None else ""
        return f"Spent {hours:.3g} {label}{budget}" + (f", ${usd:,.2f}" if usd is not None else "") + forecast


class SpendFields:
    """The status line's view of this run's spend (search/progress.py). Looked up by the run's name, like the
    callback, because Tune pickles its callbacks: a resumed search must show the LiveSpend of this process."""

    def __init__(self, name: str):
        self.name = name

    def status_fields(self) -> dict[str, str]:
        live = REGISTRY.get(self.name)
        return live.status_fields() if live is not None else {}


class SpendCallback(Callback):
    def __init__(self, name: str):
        self.name = name

    def on_step_begin(self, iteration, trials, **info):
        live = REGISTRY.get(self.name)
        if live is not None:
            live.update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (live := REGISTRY.get(self.name)) is not None:
            live.completed.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.on_trial_complete(iteration, trials, trial)


class BudgetHold:
    """True while the budget cannot cover another trial. Without it, each trial the budget stopped at its rung
    freed a slot that Tune filled with a new trial, which then ran to its first report: up to max_concurrent - 1
    trials started, and paid for, after the budget had closed."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self) -> bool:
        live = REGISTRY.get(self.name)
        return bool(live is not None and live.closed)


class BudgetStopper(Stopper):
    def __init__(self, name: str):
        self.name = name

    def __call__(self, trial_id, result) -> bool:
        live = REGISTRY.get(self.name)
        if live is None or not live.closed:
            return False
        epoch = int(result.get("epoch", 0) or 0)
        live.epochs[trial_id] = max(epoch, live.epochs.get(trial_id, 0))
        stop = trial_id in live.late or epoch in live.rungs
        if stop and epoch < live.max_epochs:
            live.stopped[trial_id] = epoch
        return stop

    def stop_all(self) -> bool:
        # Only once every trial it stopped has completed in Tune (its last checkpoint saved, the searcher told):
        # the step that processes a completion ends the search before another trial is queued.
        live = REGISTRY.get(self.name)
        return bool(live is not None and live.closed and not live.running - live.completed)


def live_spend(plan) -> LiveSpend:
    from search.space_file import asha_rungs

    s = plan.space.settings
    return LiveSpend(per_trial=s.gpus_per_trial or s.cpus_per_trial, accelerator="GPU" if s.gpus_per_trial else "CPU",
                     rungs=asha_rungs(s), max_epochs=s.max_epochs, forecast=plan.forecast, budget=plan.budget)


def mark_budget_stops(table, live: LiveSpend) -> None:
    """Trials the budget stopped at a rung say so (they are stopped early, not by ASHA)."""
    for trial_id, epoch in live.stopped.items():
        table.loc[table["trial_id"] == trial_id, "reason"] = f"stopped by the budget at epoch {epoch}"


def spent_line(table, plan) -> str:
    """What the search's trials spent, from the leaderboard (every trial, those of earlier runs included)."""
    s = plan.space.settings
    gpu = bool(s.gpus_per_trial)
    column = "accelerator_hours" if gpu else "cpu_hours"
    hours = float(table[column].sum()) if column in table else 0.0
    label = "GPU-hours" if gpu else "CPU-hours (no GPU)"
    cost = table["cost_usd"].sum(min_count=1) if "cost_usd" in table else None
    budget = (plan.budget or {}).get("hours")
    forecast = ((plan.forecast or {}).get("cost") or {}).get("accelerator_hours")
    parts = [f"Spent {hours:.3g} {label}"]
    if cost is not None and cost == cost:
        parts.append(f"${cost:,.2f}")
    if forecast is not None:
        parts.append(f"forecast {forecast:.3g}")
    if budget is not None:
        parts.append(f"budget {budget:.3g}")
    return ", ".join(parts)


def record_budget(plan) -> None:
    """A --resume that gives a new budget writes it into plan.json, so the next --resume keeps it."""
    record = _plan_record(plan)
    if record.get("budget") != plan.budget:
        _write_plan_record(plan, {**record, "budget": plan.budget})


def _plan_record(plan) -> dict:
    import json

    from core.files import PLAN_FILE

    return json.loads((plan.out_dir / PLAN_FILE).read_text())


def _write_plan_record(plan, record: dict) -> None:
    import json

    from core.atomic import write_text
    from core.files import PLAN_FILE

    write_text(plan.out_dir / PLAN_FILE, json.dumps(record, indent=2, sort_keys=True))


def record_budget_end(plan, *, ended: bool) -> None:
    """plan.json "ended_by_budget": the next --resume must reopen Tune's search (compat/ray_internals.py)."""
    record = _plan_record(plan)
    if bool(record.get("ended_by_budget")) != ended:
        _write_plan_record(plan, {**record, "ended_by_budget": ended})


def ended_by_budget(plan) -> bool:
    return bool(_plan_record(plan).get("ended_by_budget"))
