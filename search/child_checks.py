"""Questions the plan asks that need torch and timm, answered by a fresh interpreter so the driver never
imports either: parameter counts (trainable/param_counts.py) and whether pretrained weights load
(trainable/weights_check.py). JSON goes in on stdin and comes back on stdout."""
from __future__ import annotations

import json
import subprocess
import sys
import time

PARAM_COUNT_TIMEOUT_S = 600  # importing torch + timm and building a dozen meta models takes seconds; never hang a plan
WEIGHTS_TIMEOUT_S = 600      # building one model per distinct weights file


def count_parameters(models: list[dict]) -> list[dict]:
    """[{"backbone", "head", "head_hidden", "num_classes"}] -> [{"params": N} or {"error": message}]."""
    return ask_child("trainable.param_counts", models, "counting parameters", PARAM_COUNT_TIMEOUT_S)


def check_weights(checks: list[dict]) -> list[dict]:
    """[{"backbone", "weights_file", "num_classes"}] -> [{"ok": where} or {"error": message}]."""
    return ask_child("trainable.weights_check", checks, "checking pretrained weights", WEIGHTS_TIMEOUT_S)


def ask_child(module: str, payload: list[dict] | dict, what: str, timeout_s: float) -> list[dict] | dict:
    """`python -m module` with `payload` on stdin; its stdout is the JSON answer. `what` names the job in errors
    and in the progress lines (stderr: the seconds torch takes to import are not silence)."""
    started = time.perf_counter()
    print(f"Plan check: {what} for {len(payload) if isinstance(payload, list) else 1} model(s) in a child process (imports torch) ...", file=sys.stderr,
          flush=True)
    proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(payload), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} in a child process failed (exit {proc.returncode}):\n{proc.stderr}")
    print(f"Plan check: {what} done in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    return json.loads(proc.stdout)


CALIBRATION_TIMEOUT_S = 300  # the child stops starting configs after its budget_s; this only catches a hang


def time_epochs(request: dict) -> dict:
    """{"configs": [trial config], "batches", "budget_s", "threads"} -> {"timings": [...], "import_s"}
    (trainable/epoch_timing.py)."""
    return ask_child("trainable.epoch_timing", request, "timing epochs", CALIBRATION_TIMEOUT_S)
