"""k8s/raycluster.yaml and k8s/rayjob.yaml (KubeRay): they parse, name one image and the same cluster, ask for GPUs
the way the search's trials need them, and the job's --max-concurrent is what the worker groups hold
(tools/k8s_concurrency.py). No Kubernetes here: nothing is applied."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((ROOT / "k8s" / "raycluster.yaml").read_text())
JOB = yaml.safe_load((ROOT / "k8s" / "rayjob.yaml").read_text())

spec = importlib.util.spec_from_file_location("k8s_concurrency", ROOT / "tools" / "k8s_concurrency.py")
k8s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(k8s)


def containers(cluster_spec: dict):
    yield cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    for group in cluster_spec["workerGroupSpecs"]:
        yield group["template"]["spec"]["containers"][0]


def full_settings() -> dict:
    return k8s.space_settings(ROOT / "spaces" / "full.py")


def test_kinds_versions_and_one_image():
    assert (CLUSTER["apiVersion"], CLUSTER["kind"]) == ("ray.io/v1", "RayCluster")
    assert (JOB["apiVersion"], JOB["kind"]) == ("ray.io/v1", "RayJob")
    project_ray = re.search(r'"ray\[tune\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert CLUSTER["spec"]["rayVersion"] == project_ray
    images = {c["image"] for c in containers(CLUSTER["spec"])}
    images.add(JOB["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"])
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert images == {f"YOUR-REGISTRY/resnet-search:{version}"}  # the Dockerfile's image, tagged with the version


def test_the_job_runs_the_same_cluster():
    assert JOB["spec"]["rayClusterSpec"] == CLUSTER["spec"]
    assert JOB["spec"]["shutdownAfterJobFinishes"] is True


def test_the_head_runs_no_trials_and_every_worker_group_is_a_gpu_group_that_fits_a_trial():
    s = full_settings()
    assert CLUSTER["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in CLUSTER["spec"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] >= 1, group["groupName"]
        ray = k8s.pod_resources(group)
        assert ray["CPU"] >= s["cpus_per_trial"] and ray["GPU"] >= s["gpus_per_trial"], group["groupName"]
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]


def test_the_jobs_concurrency_is_what_the_worker_groups_hold():
    s = full_settings()
    by_hand = sum(g["maxReplicas"] * min(int(k8s.pod_resources(g)["CPU"] // s["cpus_per_trial"]),
                                         int(k8s.pod_resources(g)["GPU"] // s["gpus_per_trial"]))
                  for g in CLUSTER["spec"]["workerGroupSpecs"])
    assert by_hand == 4 * 1 + 2 * 4
    assert k8s.capacity(CLUSTER["spec"], s["cpus_per_trial"], s["gpus_per_trial"]) == by_hand
    entry = JOB["spec"]["entrypoint"]
    assert re.search(rf"--max-concurrent {by_hand}(\s|$)", entry), entry
    assert "resnet-search run --space spaces/full.py" in entry and "--address auto" in entry


def test_the_committed_job_is_what_the_tool_renders(tmp_path):
    out = tmp_path / "rayjob.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "k8s_concurrency.py"), str(ROOT / "k8s" / "raycluster.yaml"),
                           "--space", str(ROOT / "spaces" / "full.py"), "--render-rayjob", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "12"
    assert out.read_text() == (ROOT / "k8s" / "rayjob.yaml").read_text()


@pytest.mark.parametrize("params, limits, expected", [
    ({}, {"cpu": "7500m", "nvidia.com/gpu": 2}, {"CPU": 7.5, "GPU": 2.0}),
    ({"num-cpus": "16", "num-gpus": "1"}, {"cpu": "8", "nvidia.com/gpu": 2}, {"CPU": 16.0, "GPU": 1.0}),
])
def test_pod_resources_follow_kuberays_rule(params, limits, expected):
    group = {"rayStartParams": params, "template": {"spec": {"containers": [{"resources": {"limits": limits}}]}}}
    assert k8s.pod_resources(group) == expected


def test_fractional_gpus_per_trial_pack_more_trials():
    assert k8s.capacity(CLUSTER["spec"], 4, 0.5) == 4 * 2 + 2 * 8
