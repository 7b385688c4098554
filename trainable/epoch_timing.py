"""Seconds per epoch of a few trial configs on this machine's device, timed with the trial's own code: the plan's
forecast asks it in a child process (search/child_checks.py), so the driver stays torch-free.

    python -m trainable.epoch_timing < request.json > timings.json

Input: {"configs": [trial config, ...], "batches": N, "budget_s": S}. For each config the trial is set up as a
trial would be (data index, model without pretrained weights, loaders, optimizer) and N + 1 training batches and
N + 1 evaluation batches run through trainable/loop.py; the first of each is a warm-up and not counted. One epoch
is then len(train_loader) training batches plus len(val_loader) evaluation batches. Output, in order:
{"epoch_s", "start_s", "device"} or {"error"}; configs past budget_s get {"skipped": true}.
"""
from __future__ import annotations

import json
import sys
import time

STARTED = time.perf_counter()

import torch  # noqa: E402  (after STARTED: importing torch is part of what a trial pays to start)

from core.config import TrialConfig  # noqa: E402
from core.errors import TrialStopped  # noqa: E402
from trainable.loop import evaluate, train_one_epoch  # noqa: E402
from trainable.trial import pick_device, seed_everything, setup_run  # noqa: E402

IMPORTED = time.perf_counter()


class _Clock:
    """should_stop for the loop: asked once per batch, it notes the time and stops after `batches` + 1."""

    def __init__(self, batches: int):
        self.batches, self.times = batches, []

    def __call__(self) -> bool:
        self.times.append(time.perf_counter())
        return len(self.times) > self.batches + 1

    def per_batch(self) -> float:
        counted = self.times[1:]  # the first batch warms up (allocations, loader workers, cudnn)
        return (counted[-1] - counted[0]) / max(len(counted) - 1, 1)


def time_config(config: dict, batches: int) -> dict:
    began = time.perf_counter()
    cfg = TrialConfig.from_dict({**config, "pretrained": False, "weights_file": ""})
    seed_everything(cfg.seed)
    run = setup_run(cfg, pick_device())
    start_s = time.perf_counter() - began
    train_clock, eval_clock = _Clock(batches), _Clock(batches)
    for clock, go in ((train_clock, lambda: train_one_epoch(run.step_model, run.train_loader, run.optimizer,
                                                            run.scheduler, run.step, epoch=0, mixup=run.mixup,
                                                            scaler=run.scaler, ema=run.ema, should_stop=train_clock)),
                      (eval_clock, lambda: evaluate(run.step_model, run.val_loader, run.step, eval_clock))):
        try:
            go()
        except TrialStopped:
            pass
    train_s = train_clock.per_batch() * len(run.train_loader)
    eval_s = eval_clock.per_batch() * len(run.val_loader)
    return {"epoch_s": train_s + eval_s, "start_s": start_s, "device": run.step.device.type}


def time_configs(request: dict) -> list[dict]:
    out, deadline = [], time.perf_counter() + float(request.get("budget_s", 60))
    for config in request["configs"]:
        if time.perf_counter() > deadline:
            out.append({"skipped": True})
            continue
        try:
            out.append(time_config(config, int(request.get("batches", 3))))
        except Exception as err:  # a config the trial itself would refuse: the plan's own checks say why
            out.append({"error": f"{type(err).__name__}: {err}"})
    return out


if __name__ == "__main__":
    request = json.load(sys.stdin)
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))  # as many as a trial gets (Ray sets OMP_NUM_THREADS)
    timings = time_configs(request)
    json.dump({"timings": timings, "import_s": IMPORTED - STARTED}, sys.stdout)
