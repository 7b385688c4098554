"""requirements.lock and tools/install_venv.sh: the lock pins what pyproject.toml and constraints.txt pin, every
requirement is hashed, and the installer's choice of torch build (CUDA on a GPU machine, CPU elsewhere, the
lock's CUDA build when PyTorch's CPU index cannot be reached) runs against a fake nvidia-smi and local servers.
Nothing here installs anything."""
import http.server
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
CLUSTER_LOCK = ROOT / "requirements-cluster.lock"
SCRIPT = ROOT / "tools" / "install_venv.sh"


def name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M)}


def declared_pins(extras) -> dict[str, str]:
    """Every `==` pin of pyproject.toml (dependencies and the given extras) and constraints.txt."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, listed in project["optional-dependencies"].items():
        if extra in extras:
            requirements += listed
    requirements += [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    return {name(r): r.split("==", 1)[1].strip() for r in requirements if "==" in r}


ALL_EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


# "dashboard": an extra until main made optuna-dashboard a dependency; either way requirements.lock pins it.
@pytest.mark.parametrize("lock, extras", [(LOCK, {"test", "dashboard"}), (CLUSTER_LOCK, ALL_EXTRAS)],
                         ids=["requirements.lock", "requirements-cluster.lock"])
def test_each_lock_pins_what_pyproject_and_constraints_pin(lock, extras):
    pins, declared = lock_pins(lock), declared_pins(extras)
    assert {"torch", "torchvision", "ray", "optuna", "timm", "pytest"} <= declared.keys()
    assert {k: pins.get(k) for k in declared} == declared


def test_make_s_lock_is_the_cluster_lock_less_the_cluster_extra():
    """Seeded from the cluster lock: every package they share has one version, so a node runs what CI tested."""
    make, cluster = lock_pins(LOCK), lock_pins(CLUSTER_LOCK)
    assert make.items() <= cluster.items()
    assert "aiohttp-cors" in cluster.keys() - make.keys()  # ray[default]'s dashboard: nodes only


@pytest.mark.parametrize("lock", [LOCK, CLUSTER_LOCK], ids=lambda p: p.name)
def test_every_locked_requirement_has_a_hash_and_no_index_is_baked_in(lock):
    text = lock.read_text()
    body = "\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    stanzas = re.split(r"\n(?=[A-Za-z0-9])", body)
    assert len(stanzas) == len(lock_pins(lock)) > 100
    for stanza in stanzas:
        assert "--hash=sha256:" in stanza, stanza.splitlines()[0]
    assert "--index-url" not in text and "--find-links" not in text and "file://" not in text
    assert "pip-compile" in text and "--generate-hashes" in text  # it says how it was made


def test_make_installs_from_the_lock_and_make_lock_regenerates_it():
    makefile = (ROOT / "Makefile").read_text()
    installed = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "requirements.lock" in installed and "tools/install_venv.sh" in installed
    lock = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    assert lock.count("pip-compile") == 2 and "--generate-hashes" in lock
    assert "-o requirements-cluster.lock" in lock and "-o requirements.lock" in lock
    script = SCRIPT.read_text()
    assert '--require-hashes -r "$LOCK"' in script and "install -q --no-deps -e ." in script


def bash(function: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k not in ("TORCH_BUILD", "TORCH_CPU_INDEX")}
    environ["PATH"] = f"{fake_bin}:{environ['PATH']}"
    return subprocess.run(["bash", "-c", f"source {SCRIPT} && {function}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**environ, **env})


def fake_nvidia_smi(tmp_path: Path, output: str, rc: int = 0):
    (tmp_path / "bin").mkdir(exist_ok=True)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{output}'\nexit {rc}\n")
    smi.chmod(0o755)


@pytest.fixture
def no_gpu(tmp_path):
    """nvidia-smi present but finding no GPU (a CPU machine with the driver tools, or none at all: the same)."""
    fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9)


def test_a_gpu_machine_gets_the_cuda_build(tmp_path):
    fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA A10G (UUID: GPU-0)")
    proc = bash("choose_build", tmp_path, TORCH_CPU_INDEX="http://127.0.0.1:9/never-asked")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "cuda\n", "")


@pytest.fixture
def cpu_index():
    """A local stand-in for PyTorch's CPU index: it answers /torch/."""
    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu"
    server.shutdown()


def test_a_cpu_machine_gets_the_cpu_build_when_its_index_answers(tmp_path, no_gpu, cpu_index):
    proc = bash("choose_build", tmp_path, TORCH_CPU_INDEX=cpu_index)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "cpu\n", "")


def test_an_unreachable_cpu_index_falls_back_to_the_lock_in_one_line(tmp_path, no_gpu):
    closed = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens, the connection is refused at once
    proc = bash("choose_build", tmp_path, TORCH_CPU_INDEX=closed)
    assert proc.returncode == 0 and proc.stdout == "cuda\n"
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"PyTorch's CPU index {closed} cannot be reached" in proc.stderr and "requirements.lock" in proc.stderr


def test_torch_build_forces_a_choice_and_a_bad_value_is_refused(tmp_path, no_gpu):
    assert bash("choose_build", tmp_path, TORCH_BUILD="cuda").stdout == "cuda\n"
    proc = bash("choose_build", tmp_path, TORCH_BUILD="rocm")
    assert proc.returncode == 2 and "TORCH_BUILD is 'rocm', but must be cpu or cuda" in proc.stderr


def test_the_cpu_path_keeps_every_locked_package_but_the_cuda_ones(tmp_path):
    proc = bash("lock_without_cuda requirements.lock", tmp_path)
    kept = {m for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", proc.stdout, re.M)}
    dropped = set(lock_pins()) - kept
    assert {"torch", "torchvision", "triton"} <= dropped
    assert all(re.match(r"(torch|torchvision|triton|cuda-|nvidia-)", d) for d in dropped), dropped
    assert {"numpy", "sympy", "filelock", "timm", "ray"} <= kept  # torch's own pure-Python deps stay, hashed
    assert proc.stdout.count("--hash=sha256:") > 100
    versions = bash("echo $(locked_version torch) $(locked_version torchvision)", tmp_path).stdout.split()
    assert versions == [lock_pins()["torch"], lock_pins()["torchvision"]]
