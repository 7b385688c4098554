"""slurm/resnet-search.sbatch on one machine: stand-ins for srun, scontrol, hostname, ray and resnet-search record
what the script asks of them, so its logic (node list, head address, port, token, start order, waiting for the
nodes, the driver's arguments) runs without Slurm or Ray."""
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "slurm" / "resnet-search.sbatch"

FAKES = {
    # srun [--nodes=N] [--ntasks=N] -w NODE CMD...: runs CMD here, noting the node it was meant for.
    "srun": """#!/usr/bin/env bash
node=""
while [[ $1 == -* ]]; do case $1 in -w) node=$2; shift 2 ;; *) shift ;; esac; done
NODE=$node exec "$@"
""",
    "scontrol": """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" && "$3" == "$SLURM_JOB_NODELIST" ]] || exit 1
printf '%s\\n' gpu01 gpu02 gpu03
""",
    "hostname": """#!/usr/bin/env bash
[[ $1 == --ip-address ]] && echo "10.0.0.$(( ${NODE#gpu} )) fe80::1"
""",
    # ray start: one JSON line per call; ray status: one node line per `ray start` so far.
    "ray": """#!/usr/bin/env bash
if [[ $1 == status ]]; then
    n=$(grep -c '"start"' "$LOG" || true); for ((i = 0; i < n; i++)); do echo " 1 node_$i"; done; exit 0
fi
python3 -c 'import json, os, stat, sys; p = os.environ["RAY_AUTH_TOKEN_PATH"]; print(json.dumps({"tool": "ray", "args": sys.argv[1:], "node": os.environ.get("NODE"), "mode": os.environ.get("RAY_AUTH_MODE"), "token": p, "token_mode": oct(stat.S_IMODE(os.stat(p).st_mode))}))' "$@" >> "$LOG"
""",
    "resnet-search": """#!/usr/bin/env bash
python3 -c 'import json, os, sys; print(json.dumps({"tool": "resnet-search", "args": sys.argv[1:], "address": os.environ["RAY_ADDRESS"], "token_exists": os.path.exists(os.environ["RAY_AUTH_TOKEN_PATH"])}))' "$@" >> "$LOG"
""",
}


def install(folder: Path, name: str, text: str):
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def job(tmp_path):
    bin_dir, venv_bin, submit = tmp_path / "bin", tmp_path / "venv" / "bin", tmp_path / "submit"
    for d in (bin_dir, venv_bin, submit):
        d.mkdir(parents=True)
    for name in ("srun", "scontrol", "hostname"):
        install(bin_dir, name, FAKES[name])
    for name in ("ray", "resnet-search"):
        install(venv_bin, name, FAKES[name])
    log = tmp_path / "calls.jsonl"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", LOG=str(log), SLURM_SUBMIT_DIR=str(submit),
               SLURM_JOB_ID="123456", SLURM_JOB_NODELIST="gpu[01-03]", SLURM_JOB_NUM_NODES="3",
               SLURM_CPUS_PER_TASK="8", SLURM_GPUS_PER_TASK="1", RESNET_SEARCH_VENV=str(tmp_path / "venv"),
               NODE="gpu01")
    return env, log, submit


def run(env, *args):
    return subprocess.run(["bash", str(SBATCH), *args], env=env, capture_output=True, text=True, timeout=120)


def test_head_on_the_first_node_workers_on_the_rest_then_the_driver(job):
    env, log, submit = job
    proc = run(env, "--space", "spaces/full.py", "--data", "/shared/hw1")
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [c for c in calls if c["tool"] == "ray"]
    port = 20000 + 123456 % 20000
    head = starts[0]
    assert head["node"] == "gpu01" and "--head" in head["args"] and f"--port={port}" in head["args"]
    assert "--node-ip-address=10.0.0.1" in head["args"] and "--dashboard-host=127.0.0.1" in head["args"]
    assert sorted(c["node"] for c in starts[1:]) == ["gpu02", "gpu03"]
    for worker in starts[1:]:
        assert f"--address=10.0.0.1:{port}" in worker["args"] and "--head" not in worker["args"]
    for c in starts:
        assert "--num-cpus=8" in c["args"] and "--num-gpus=1" in c["args"] and "--block" in c["args"]
        # One token for the job, owner-only, and token mode on every node.
        assert c["mode"] == "token" and c["token"] == str(submit / ".ray-token-123456") and c["token_mode"] == "0o600"
    driver = calls[-1]
    assert driver["tool"] == "resnet-search" and driver["address"] == f"10.0.0.1:{port}" and driver["token_exists"]
    assert driver["args"] == ["run", "--address", f"10.0.0.1:{port}", "--storage", str(submit / "results"),
                              "--space", "spaces/full.py", "--data", "/shared/hw1"]
    assert not (submit / ".ray-token-123456").exists()  # deleted when the job ends
    assert "3 node(s), head gpu01" in proc.stdout


def test_outside_sbatch_or_without_a_venv_it_says_what_to_do(job):
    env, log, submit = job
    proc = run({k: v for k, v in env.items() if k != "SLURM_SUBMIT_DIR"})
    assert proc.returncode != 0 and "run this through sbatch" in proc.stderr
    proc = run({**env, "RESNET_SEARCH_VENV": str(submit / "nothing")})
    assert proc.returncode == 2 and "has no ray/resnet-search: run `make`" in proc.stderr
