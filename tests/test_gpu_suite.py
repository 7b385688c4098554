"""The GPU suite's CPU rehearsal (python -m benchmarks.tools.gpu_suite --rehearsal): the one command a GPU node will run
produces its JSON and table here too, so it cannot rot between the rare GPU loans. Figures are not checked."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = ("fp32 (no bf16 autocast)", "channels_last off", "foreach AdamW (not fused)", "cudnn.benchmark off")


def run_suite(*argv, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks.tools.gpu_suite", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    done = run_suite("--rehearsal", "--out", str(out), "--checkpoint-models", "resnet10t", "not_a_model")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text(), done.stdout


def test_rehearsal_writes_every_key_and_measurement(rehearsal):
    _, result, _, _ = rehearsal
    assert {"command", "profile_name", "profile", "date", "install", "machine", "gpu_tests", "parts", "rows",
            "errors", "seconds"} <= set(result)
    assert result["profile_name"] == "rehearsal" and result["install"] is None
    assert {"device", "cpus", "torch", "python"} <= set(result["machine"])
    assert set(result["parts"]) == {"tests", "step", "loader", "fractional", "checkpoint"}
    assert not any(p["timed_out"] for p in result["parts"].values())
    rows = {r["measurement"]: r for r in result["rows"]}

    def measured(name, baseline=None):
        row = rows[name]
        assert "error" not in row and row["value"] >= 0, row
        if baseline:
            assert row["baseline"] == baseline and row["ratio"] == round(row["value"] / row["baseline_value"], 2)

    # The GPU tests ran and skipped cleanly on CPU.
    assert result["gpu_tests"]["skipped"] == result["gpu_tests"]["tests"] > 0 and result["gpu_tests"]["failed"] == []
    assert rows["GPU tests (pytest -m gpu)"]["value"] == 0
    # step: trial vs the reference loop, each switch off vs all on, JPEGs through both loaders
    measured("reference loop, synthetic")
    measured("trial, synthetic, all switches on", "reference loop, synthetic")
    for what in SWITCHES:
        measured(f"trial, synthetic, {what}", "trial, synthetic, all switches on")
    assert "skipped" in rows["trial, synthetic, with torch.compile"]
    for loader in ("pil", "cache"):
        measured(f"trial, JPEGs, loader={loader}", "reference loop, JPEGs")
    # loader alone: pil vs cache per worker count and augment policy, and the workers the step needs
    for augment in ("none", "trivialaugment"):
        for n in (0, 1):
            measured(f"loader=cache, augment={augment}, {n} workers", f"loader=pil, augment={augment}, {n} workers")
        assert rows[f"cache workers to keep the GPU fed, augment={augment}"]["value"] >= 0
    measured("1 trial(s) sharing the GPU, train img/s per GPU")
    measured("1 trial(s) sharing the GPU, epochs per hour (wall clock, start-up included)")
    assert rows["1 trial(s) sharing the GPU, peak GPU memory per trial"]["value"] == 0.0  # CPU: no GPU memory
    measured("resnet10t: save trial checkpoint", "resnet10t: save weights only (torch.save state_dict)")
    measured("resnet10t: restore trial checkpoint", "resnet10t: restore weights only")


def test_a_failing_measurement_is_recorded_and_the_rest_still_run(rehearsal):
    _, result, table, stdout = rehearsal
    assert result["errors"] == ["checkpoint: not_a_model: parameters: ModelError: Unknown backbone 'not_a_model'. "
                                "List them with `python -m trainable --list-backbones`."]
    rows = {r["measurement"]: r for r in result["rows"]}
    assert "skipped" in rows["not_a_model: save trial checkpoint"]
    assert rows["resnet10t: restore trial checkpoint"]["value"] >= 0  # measured before the failing model
    assert "1 error(s)" in stdout


def test_a_part_past_its_time_limit_is_killed_and_recorded(tmp_path):
    done = run_suite("--rehearsal", "--out", str(tmp_path), "--parts", "fractional", "--timeout", "2", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["parts"]["fractional"]["timed_out"] is True and result["parts"]["fractional"]["seconds"] < 30
    assert len(result["errors"]) == 1 and result["errors"][0].startswith("fractional: fractional (the rest of the part): "
                                                                         "timed out after 2 s")
    assert "timed out after 2 s" in (tmp_path / "gpu_suite.md").read_text()


def test_table_has_one_row_per_measurement(rehearsal):
    out, result, table, _ = rehearsal
    lines = table.splitlines()
    assert lines[0].startswith(f"GPU suite, {result['date']}: CPU") and "profile `rehearsal`" in lines[0]
    header = lines.index("| part | measurement | value | unit | baseline (same run) | ratio |")
    body = lines[header + 2:]
    assert len(body) == len(result["rows"])
    for line, row in zip(body, result["rows"]):
        assert line.startswith(f"| {row['part']} | {row['measurement']} | ")
    assert "| step | trial, synthetic, all switches on | " in table
    assert "error: ModelError: Unknown backbone 'not_a_model'" in table


def test_the_gpu_profile_refuses_to_run_without_cuda(tmp_path):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_suite("--out", str(tmp_path), "--parts", "step", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("gpu_suite: No CUDA device is visible to torch here")
    assert "--rehearsal" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "gpu_suite.json").exists()


def test_missing_wheel_folder_is_one_clear_message(tmp_path):
    done = run_suite("--rehearsal", "--out", str(tmp_path), "--wheels", str(tmp_path / "nope"), timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--wheels {tmp_path / 'nope'} is not a folder" in done.stderr and "gpu_wheels.sh" in done.stderr
