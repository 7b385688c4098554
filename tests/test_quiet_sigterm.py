"""worker/quiet_sigterm.py: a SystemExit Python cannot raise (inside a GC callback) leaves no traceback; other
unraisable errors still print."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
{install}
class RaisesWhenCollected:
    def __init__(self, exc): self.exc = exc
    def __del__(self): raise self.exc
RaisesWhenCollected(SystemExit(1))      # what Ray's SIGTERM handler does when the signal lands in a callback
RaisesWhenCollected(ValueError("kept"))  # any other unraisable error
print("still running")
"""


def _run(install: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(install=install)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_without_the_hook_python_prints_both_tracebacks():
    proc = _run("")
    assert proc.stderr.count("Exception ignored in") == 2 and "SystemExit" in proc.stderr


def test_the_hook_drops_only_the_system_exit():
    proc = _run("from worker import quiet_sigterm; quiet_sigterm.install(); quiet_sigterm.install()")
    assert proc.returncode == 0 and proc.stdout.strip() == "still running"
    assert proc.stderr.count("Exception ignored in") == 1
    assert "ValueError: kept" in proc.stderr and "SystemExit" not in proc.stderr
