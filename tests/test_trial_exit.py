"""A trial the search stops while its process exits frees its objects before Python finalizes (no SIGABRT)."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading
    from core.epoch_reporter import Sink
    from worker.tune_trial import run_reporting_to_tune

    class Quiet(Sink):
        def send(self, metrics, checkpoint_dir):
            pass

    reported, woken, freeing, exiting = (threading.Event() for _ in range(4))

    class Held:  # stands for the model, optimizer and loaders a trial holds: freeing them takes a while
        def __del__(self):
            freeing.set()
            exiting.wait()  # still freeing when the process has begun to exit
            freed.append(True)

    freed = []
    # registered first, so it runs last: what the process's end finds
    atexit.register(lambda: print("trial objects freed" if freed else "exiting while the trial frees", flush=True))

    def train(config, sink):
        held = Held()
        reported.set()
        woken.wait()     # blocked in tune.report, as a trial is when the scheduler stops it
        raise SystemExit(0)  # how Tune wakes a stopped trial

    # Tune's runner thread is a daemon: nothing would wait for it at exit
    threading.Thread(target=run_reporting_to_tune, args=(train, {}, Quiet()), daemon=True).start()
    reported.wait()
    atexit.register(exiting.set)  # the first thing the exit does (atexit runs last-registered first)
    woken.set()
    freeing.wait()
    sys.exit(0)          # Tune ends the actor at once, without joining the trial thread
""")


def test_a_stopped_trial_is_unwound_before_its_process_finalizes():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["trial objects freed"], (proc.stdout, proc.stderr)
