"""cluster.yaml: Ray's own schema and defaults accept it, and it keeps the properties the README promises.

Uses the checks `ray up` runs before touching AWS (ray.autoscaler._private.util.prepare_config, then
validate_config against ray/autoscaler/ray-schema.json); nothing here needs AWS, a network or a Ray cluster.
"""
import ast
import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
README = ROOT / "README.md"


def raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def check(config):
    """What `ray up` does before any cloud call: fill in defaults, then validate (schema + consistency)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared():
    return check(raw())


def worker_types(config):
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def start_commands(config):
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]


def full_space_settings():
    """SETTINGS of spaces/full.py, read without importing it (that would import torch and timm)."""
    tree = ast.parse((ROOT / "spaces" / "full.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SETTINGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("spaces/full.py has no SETTINGS")


def test_ray_accepts_it_and_keeps_our_values(prepared):
    cfg = raw()
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    # prepare_config merges Ray's AWS defaults under ours: nothing we set is overridden.
    for key in ("max_workers", "upscaling_speed", "idle_timeout_minutes", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert prepared[key] == cfg[key], key
    # Ray's default head_setup_commands (a system-wide pip install) are replaced, not appended.
    assert prepared["head_setup_commands"] == cfg["setup_commands"]
    assert prepared["worker_setup_commands"] == cfg["setup_commands"]


def test_head_runs_no_trials(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must advertise CPU 0 explicitly"
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--head" in start and "--port=6379" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_every_worker_type_declares_cpu_gpu_and_sane_limits(prepared):
    workers = worker_types(prepared)
    assert workers
    for name, t in workers.items():
        assert t["resources"].get("CPU", 0) > 0 and t["resources"].get("GPU", 0) > 0, name
        assert 0 <= t["min_workers"] <= t["max_workers"] <= prepared["max_workers"], name
        assert t["node_config"]["InstanceType"], name
    assert {t["node_config"]["InstanceType"] for t in workers.values()} >= {"g5.2xlarge", "g5.12xlarge"}
    assert sum(t["min_workers"] for t in prepared["available_node_types"].values()) <= prepared["max_workers"]
    assert prepared["idle_timeout_minutes"] > 0 and prepared["upscaling_speed"] > 0


def test_a_trial_of_the_full_space_fits_on_every_worker_type(prepared):
    s = full_space_settings()
    for name, t in worker_types(prepared).items():
        if t["max_workers"] == 0:
            continue
        assert t["resources"]["CPU"] >= s["cpus_per_trial"] and t["resources"]["GPU"] >= s["gpus_per_trial"], name


def test_spot_variant_is_spot():
    spot = [t for t in raw()["available_node_types"].values()
            if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot and all(t["resources"].get("GPU", 0) > 0 for t in spot)


def test_setup_installs_the_project_at_the_pinned_ray_and_syncs_the_data(prepared):
    setup = prepared["setup_commands"]
    # The setup every cluster file shares (tests/test_cluster_onprem.py), installing from the lock.
    assert setup[0] == "bash ~/resnet-search/clusters/setup_node.sh"
    assert "tools/install_venv.sh" in (ROOT / "clusters" / "setup_node.sh").read_text()
    assert "aws s3 sync" in "\n".join(setup) and "/data/hw1" in "\n".join(setup)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_pin = next(p for p in project["dependencies"] if p.startswith("ray[")).split("==")[1]
    # Every node, the project and the machine running `ray up` must run the same Ray.
    assert f"ray[default]=={ray_pin}" in project["optional-dependencies"]["cluster"]
    assert re.search(rf"^ray=={re.escape(ray_pin)} ", (ROOT / "requirements-cluster.lock").read_text(), re.M)
    assert ray.__version__ == ray_pin


def test_file_mounts_hold_what_pip_install_needs_and_exist_locally(prepared):
    mounts = prepared["file_mounts"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    for local in needed:
        assert mounts.get(f"~/resnet-search/{local}") == local, local
    for remote, local in mounts.items():
        if not local.startswith("~"):
            assert (ROOT / local).exists(), f"{local} (mounted at {remote}) is missing from the repository"


def test_token_auth_stays_on_and_the_token_is_not_in_the_repo(prepared):
    # The token file is mounted at Ray's default token path on every node...
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # ...token mode is set for every `ray start`...
    for cmd in start_commands(prepared):
        assert "RAY_AUTH_MODE=token" in cmd, cmd
    # ...and nothing that looks like a token or an AWS secret is committed.
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"[0-9a-fA-F]{32,}", text)
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|RAY_AUTH_TOKEN=", text)
    assert not (ROOT / ".ray").exists()


def test_setup_commands_are_safe_to_rerun(prepared):
    """`ray up` reruns setup_commands on every update: nothing may pile up or fail the second time."""
    setup = prepared["setup_commands"]
    for cmd in setup:
        for appended in re.findall(r"echo '([^']+)' >> ~/\.bashrc", cmd):
            assert f"grep -qxF '{appended}' ~/.bashrc ||" in cmd, cmd  # appended once, not once per `ray up`
        if "python3 -m venv" in cmd:
            assert cmd.startswith("test -x"), cmd  # an existing venv is kept
        if "mkdir" in cmd:
            assert "mkdir -p" in cmd, cmd
    sync = next(c for c in setup if "aws s3 sync" in c)
    assert "/data/hw1" in sync and "--delete" not in sync  # copies what is missing; never wipes a node's data


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def cluster_section() -> str:
    """README's cluster section and its prices (the section after it, "Costs")."""
    return readme_section("On a cluster") + readme_section("Costs")


def test_readme_has_the_commands_to_start_use_watch_and_stop_it():
    text = cluster_section()
    for command in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "ray down cluster.yaml",
                    "ray get-auth-token --generate"):
        assert command in text, command
    runs = [line for line in text.splitlines() if re.search(r"ray (exec|submit)\b.*search/run\.py", line)]
    assert runs, "no `ray exec`/`ray submit` command running search/run.py"
    for line in runs:  # the driver joins the cluster and writes to shared storage, never a node's disk
        assert "--address auto" in line and "--storage s3://" in line, line
    assert re.search(r"tensorboard --logdir s3://\S+", text)
    assert "tests/local_cluster.py" in text and "tests/test_multinode.py" in text


def test_readme_matches_cluster_yaml_types_counts_and_prices(prepared):
    text = " ".join(cluster_section().split())
    for name, t in prepared["available_node_types"].items():
        instance = t["node_config"]["InstanceType"]
        assert re.search(rf"{re.escape(instance)} ~\$\d+(\.\d+)?/h", text), f"no hourly price for {instance}"
        if name != prepared["head_node_type"] and t["max_workers"] > 0:
            assert f"{t['max_workers']} x {instance}" in text, f"README's count of {name} differs from cluster.yaml"
    assert "approximately" in text and "check current pricing" in text


def test_dashboard_and_gcs_are_not_exposed(prepared):
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for rule in prepared["provider"].get("security_group", {}).get("IpPermissions", []):
        opens = range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1)
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not (public and {6379, 8265, 10001} & set(opens)), rule
    for t in prepared["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]  # the named group above applies to every node


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda c: c["available_node_types"]["gpu1"].__setitem__(
        "max_worker", c["available_node_types"]["gpu1"].pop("max_workers")), id="node max_workers->max_worker"),
    pytest.param(lambda c: c.__setitem__("max_worker", c.pop("max_workers")), id="max_workers->max_worker"),
    pytest.param(lambda c: c.__setitem__("available_node_type", c.pop("available_node_types")),
                 id="available_node_types->available_node_type"),
    pytest.param(lambda c: c.__setitem__("setup_command", c.pop("setup_commands")),
                 id="setup_commands->setup_command"),
    pytest.param(lambda c: c["available_node_types"]["gpu4"].__setitem__(
        "resource", c["available_node_types"]["gpu4"].pop("resources")), id="resources->resource"),
    pytest.param(lambda c: c["available_node_types"]["gpu4"]["resources"].__setitem__("GPU", "4"),
                 id="GPU as a string"),
])
def test_a_typo_is_rejected(mutate):
    config = raw()
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        check(config)


def test_a_head_type_that_does_not_exist_is_rejected():
    config = raw()
    config["head_node_type"] = "haed"
    with pytest.raises(ValueError, match="head_node_type"):
        check(config)


def test_provider_keys_are_ones_ray_knows():
    """Ray's schema lets any key into `provider` (a typo there would pass validate_config silently)."""
    import json
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    known = set(schema["properties"]["provider"]["properties"])
    assert set(raw()["provider"]) <= known
