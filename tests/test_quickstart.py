"""The README's quick start as a new user meets it: `make demo`'s command (shrunk to 6 trials), then every command
its summary prints, with the environment activated as the README says; and every file the run leaves is named in
results/README.md. `make test` itself is not run here (it is this suite)."""
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_the_demo_and_every_command_it_prints_work(tmp_path):
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "RAY_ADDRESS": ""}  # `source .venv/bin/activate`, and a Ray of its own as on a fresh machine
    env.pop("RAY_AUTH_MODE", None)
    demo = ["python", "search/run.py", "--space", "spaces/quick.py",  # the Makefile's demo line
            "--num-samples", "6", "--storage", str(tmp_path / "results"), "--name", "demo"]
    proc = subprocess.run(demo, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for noise in ("Traceback", "SIGABRT", "tune_trial_", "Checkpoint successfully created", "Token authentication",
                  "Configuration for experiment", "/tmp/ray/"):
        assert noise not in out, noise
    assert re.search(r"^\[search \S+\] .* ended \(\d+ stopped by ASHA, \d+ failed\)", out, re.M)  # the status line
    summary = out[out.rindex("Best trial"):]
    assert re.search(r"^Trials: 6 \(\d+ stopped early by ASHA, 0 failed\)\. ASHA ran \d+ of the 18 epochs", summary,
                     re.M), summary
    assert re.search(r"^TPE: 1 warm start, \d+ random startup trials?, \d+ sampled from its model", summary, re.M)
    assert re.search(r"^Ensemble: \w+ of \d+ members?", summary, re.M), summary

    run_dir = tmp_path / "results" / "demo"
    commands = [re.search(r"^Compare trials: (.+)$", summary, re.M).group(1),
                re.search(r"^Optuna study: (.+)$", out, re.M).group(1),
                f"python search/report.py {run_dir}"]
    for command in commands:
        argv = shlex.split(command)
        assert shutil.which(argv[0], path=env["PATH"]), f"{argv[0]} (printed: {command}) is not on the PATH"
        if argv[0].endswith(("tensorboard", "optuna-dashboard")):  # servers: that they start is enough here
            argv = [argv[0], "--version_tb" if argv[0].endswith("tensorboard") else "--version"]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])

    documented = (ROOT / "results" / "README.md").read_text()
    patterns = set(re.findall(r"[\w.\-]*\*[\w.\-*]*", documented))
    trials = {p.name for p in run_dir.iterdir() if (p / "params.json").exists()}
    unnamed = [p.name for p in run_dir.iterdir()
               if not p.name.startswith(".") and p.name not in trials and p.name not in documented
               and not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)]
    assert unnamed == [], f"results/README.md does not name {unnamed}"
