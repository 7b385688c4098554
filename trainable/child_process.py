"""Run a trainable module in a fresh interpreter, JSON in and out: the search driver asks questions that
need torch and timm (parameter counts, whether weights load) without importing either itself."""
from __future__ import annotations

import json
import subprocess
import sys


def ask_child(module: str, payload: list[dict], what: str, timeout_s: float) -> list[dict]:
    """`python -m module` with `payload` on stdin; its stdout is the JSON answer. `what` names the job in errors."""
    proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(payload), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} in a child process failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)
