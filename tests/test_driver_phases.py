"""The driver's phase clock (benchmarks/driver_phases.py): each call's time counted once, in its own phase."""
import importlib.util
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "driver_phases", Path(__file__).resolve().parents[1] / "benchmarks" / "driver_phases.py")
driver_phases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(driver_phases)
PhaseClock = driver_phases.PhaseClock


class Loop:
    def step(self):
        time.sleep(0.02)
        self.stop()           # a nested phase: taken out of the outer one

    def stop(self):
        time.sleep(0.05)

    def poll(self, found: bool) -> bool:
        return found


def test_nested_phases_are_counted_once_and_methods_restored():
    original_step, original_stop = Loop.step, Loop.stop
    with PhaseClock([(Loop, "step", "result"), (Loop, "stop", "end"), (Loop, "poll", ("dispatch", "scan"))]) as clock:
        Loop().step()
        Loop().stop()
        for found in (True, False, False):
            Loop().poll(found)
    assert Loop.step is original_step and Loop.stop is original_stop
    assert clock.calls == {"step": 1, "stop": 2, "poll": 3}
    assert clock.phase_calls["dispatch"] == 1 and clock.phase_calls["scan"] == 2  # by what the call returned
    assert clock.wall_s["result"] == pytest.approx(0.02, abs=0.015)   # without the 0.05 s of its nested stop
    assert clock.wall_s["end"] == pytest.approx(0.10, abs=0.03)
    summary = clock.summary(trials=2, results=1, checkpoints=0)
    assert summary["per_trial_end"]["wall_ms"] == pytest.approx(50, abs=15)
    assert summary["per_trial_end"]["cpu_ms"] < 10                     # sleeping is wall time, not CPU
