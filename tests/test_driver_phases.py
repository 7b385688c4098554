"""The driver's phase clock (benchmarks/tools/driver_phases.py): each call's time counted once, in its own phase."""
import pytest

from benchmarks.tools.driver_phases import PhaseClock


class FakeClock:
    """Wall time advances only when a phase 'waits'; CPU time only when it 'computes': exact, whatever the load."""
    wall = cpu = 0.0

    @classmethod
    def wait(cls, s):
        cls.wall += s

    @classmethod
    def compute(cls, s):
        cls.wall += s
        cls.cpu += s


class Loop:
    def step(self):
        FakeClock.compute(0.02)
        self.stop()           # a nested phase: taken out of the outer one

    def stop(self):
        FakeClock.wait(0.05)

    def poll(self, found: bool) -> bool:
        return found


def test_nested_phases_are_counted_once_and_methods_restored():
    original_step, original_stop = Loop.step, Loop.stop
    with PhaseClock([(Loop, "step", "result"), (Loop, "stop", "end"), (Loop, "poll", ("dispatch", "scan"))],
                    wall=lambda: FakeClock.wall, cpu=lambda: FakeClock.cpu) as clock:
        Loop().step()
        Loop().stop()
        for found in (True, False, False):
            Loop().poll(found)
    assert Loop.step is original_step and Loop.stop is original_stop
    assert clock.calls == {"step": 1, "stop": 2, "poll": 3}
    assert clock.phase_calls["dispatch"] == 1 and clock.phase_calls["scan"] == 2  # by what the call returned
    assert clock.wall_s["result"] == pytest.approx(0.02)   # without the 0.05 s of its nested stop
    assert clock.cpu_s["result"] == pytest.approx(0.02)
    assert clock.wall_s["end"] == pytest.approx(0.10)
    summary = clock.summary(trials=2, results=1, checkpoints=0)
    assert summary["per_trial_end"]["wall_ms"] == pytest.approx(50)
    assert summary["per_trial_end"]["cpu_ms"] == 0          # waiting is wall time, not CPU
