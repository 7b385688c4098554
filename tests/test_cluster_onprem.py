"""clusters/onprem.yaml (Ray's local provider) and clusters/setup_node.sh, the setup every cluster file shares.

Ray's own checks accept the on-prem file; it copies the same files and runs the same setup as cluster.yaml; the
setup script's CI form (--reuse-venv) builds a node venv that runs the copied code, and reruns add nothing. The
real `ray up` → search → `ray down` on loopback is tools/loopback_ray_up.sh (run by .ci/run; it needs root and
sshd, so it is not a pytest test).
"""
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
ONPREM = ROOT / "clusters" / "onprem.yaml"
SETUP = ROOT / "clusters" / "setup_node.sh"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def prepared():
    config = prepare_config(copy.deepcopy(load(ONPREM)))
    validate_config(config)
    return config


def test_ray_accepts_it_as_a_local_cluster(prepared):
    raw = load(ONPREM)
    assert raw["provider"]["type"] == "local" and raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
    assert raw["auth"]["ssh_user"] and raw["auth"]["ssh_private_key"]
    (node_type,) = prepared["available_node_types"].values()  # Ray's local provider: one type, detected resources
    assert node_type["max_workers"] == len(raw["provider"]["worker_ips"]) == prepared["max_workers"]


def test_it_shares_setup_and_files_with_the_aws_file(prepared):
    aws = load(ROOT / "cluster.yaml")
    assert prepared["setup_commands"][0] == aws["setup_commands"][0] == "bash ~/resnet-search/clusters/setup_node.sh"
    assert load(ONPREM)["file_mounts"] == aws["file_mounts"]
    assert prepared["head_setup_commands"] == prepared["setup_commands"]  # Ray's defaults replaced, not appended
    for remote, local in prepared["file_mounts"].items():
        if not local.startswith("~"):
            assert (ROOT / local).exists(), local


def test_token_auth_and_a_private_dashboard(prepared):
    for cmd in prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, cmd
    assert "--dashboard-host=127.0.0.1" in " ".join(prepared["head_start_ray_commands"])
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_ci_runs_the_loopback_launch():
    assert "tools/loopback_ray_up.sh" in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "tools" / "loopback_ray_up.sh").read_text()
    steps = ("ray up -y", "ray exec", "ray down -y", "clusters/onprem.yaml", "--pid --fork --mount-proc", 'echo "--net"')
    for step in steps:
        assert step in script, step


@pytest.fixture
def node(tmp_path):
    """A node's ~/resnet-search as file_mounts leave it: the repository's files, and a home of its own."""
    repo = tmp_path / "home" / "resnet-search"
    for name in ("clusters", "tools", "cli", "core"):
        shutil.copytree(ROOT / name, repo / name)
    shutil.copy(ROOT / "requirements-cluster.lock", repo)
    return repo


def node_env(repo: Path) -> dict:
    """A node's environment: its own HOME, nothing pointing at this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(repo.parent)}


def run_setup(repo: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "clusters" / "setup_node.sh"), *args], capture_output=True, text=True,
                          timeout=300, env=node_env(repo))


def test_setup_reusing_a_built_venv_runs_the_copied_code_and_reruns_add_nothing(node):
    for _ in range(2):
        proc = run_setup(node, "--reuse-venv", sys.prefix)
        assert proc.returncode == 0, proc.stderr[-3000:]
    python = node / ".venv" / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import cli.main, ray; print(cli.main.__file__); print(ray.__version__)"],
                           capture_output=True, text=True, timeout=300, cwd="/", env=node_env(node))
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.splitlines()[0] == str(node / "cli" / "main.py")  # the copy, not this checkout
    for tool in ("ray", "resnet-search"):
        assert os.access(node / ".venv" / "bin" / tool, os.X_OK), tool
    bashrc = (node.parent / ".bashrc").read_text().splitlines()
    assert bashrc == [f'export PATH="{node}/.venv/bin:$PATH"', "export RAY_AUTH_MODE=token"]  # once, after 2 runs


def test_setup_refuses_what_is_not_a_venv_in_one_line(node, tmp_path):
    proc = run_setup(node, "--reuse-venv", str(tmp_path))
    assert proc.returncode == 2 and "is not a venv" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_setup(node, "--reuse")
    assert proc.returncode == 2 and "unknown argument '--reuse'" in proc.stderr
