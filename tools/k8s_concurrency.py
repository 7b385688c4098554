"""Trials at once for a KubeRay cluster, from its worker groups: no hand arithmetic, no cluster needed.

    python tools/k8s_concurrency.py k8s/raycluster.yaml --space spaces/full.py      # prints 12
    python tools/k8s_concurrency.py k8s/raycluster.yaml --space spaces/full.py --render-rayjob k8s/rayjob.yaml

An autoscaling RayCluster starts with no worker pods, so the driver cannot count them (search/concurrency.py
reads `ray up`'s autoscaler config, which KubeRay does not leave on the head). This reads the manifest instead:
for each worker group, maxReplicas x the trials one pod holds, with the pod's Ray resources as KubeRay sets them
(rayStartParams num-cpus / num-gpus, else the container's limits, else its requests), the same sum as
search/concurrency.py's autoscaler_capacity. --render-rayjob writes k8s/rayjob.yaml: the RayCluster's spec as the
job's rayClusterSpec and `--max-concurrent N` in its entrypoint, so the two files cannot drift
(tests/test_k8s.py checks that they have not).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from search.concurrency import trials_per_node  # noqa: E402  (light: no torch, no Ray)

JOB_ARGS = "--space spaces/full.py --data /mnt/shared/hw1 --storage /mnt/shared/tune --address auto --name full-k8s"


def quantity(value) -> float:
    """A Kubernetes CPU/GPU quantity: 8, "8", "7500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def pod_resources(group: dict) -> dict:
    """The Ray resources of one pod of a worker group, by KubeRay's rule."""
    params = group.get("rayStartParams") or {}
    container = group["template"]["spec"]["containers"][0]
    limits = container.get("resources", {}).get("limits", {})
    requests = container.get("resources", {}).get("requests", {})
    declared = {**requests, **limits}
    cpu = params.get("num-cpus", declared.get("cpu", 0))
    gpu = params.get("num-gpus", declared.get("nvidia.com/gpu", 0))
    return {"CPU": quantity(cpu), "GPU": quantity(gpu)}


def cluster_spec(manifest: dict) -> dict:
    """A RayCluster's spec, or a RayJob's rayClusterSpec."""
    if manifest.get("kind") == "RayJob":
        return manifest["spec"]["rayClusterSpec"]
    if manifest.get("kind") == "RayCluster":
        return manifest["spec"]
    raise SystemExit(f"error: expected a RayCluster or RayJob manifest, got kind {manifest.get('kind')!r}")


def capacity(spec: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Trials the cluster holds at full size: every worker group at maxReplicas (the head runs none)."""
    return sum(int(group.get("maxReplicas", group.get("replicas", 0)))
               * trials_per_node(pod_resources(group), cpus_per_trial, gpus_per_trial)
               for group in spec.get("workerGroupSpecs", []))


def space_settings(path: Path) -> dict:
    """SETTINGS of a space file, read without importing it (that would import torch and timm)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SETTINGS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"error: {path} has no SETTINGS")


def render_rayjob(raycluster: dict, trials: int) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "resnet-search-full"},
        "spec": {
            "entrypoint": f"cd /home/ray/resnet-search && resnet-search run {JOB_ARGS} --max-concurrent {trials}",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "ray-job-submitter",
                "image": raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"],
                "env": raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}]}},
            "rayClusterSpec": raycluster["spec"],
        },
    }


HEADER = """# One search as a RayJob: KubeRay creates a cluster of k8s/raycluster.yaml's shape, runs the entrypoint, and deletes
# the cluster when it ends. docs/clusters.md "Kubernetes". Never applied from this repository's CI.
#
# GENERATED from k8s/raycluster.yaml; edit that file, then:
#   python tools/k8s_concurrency.py k8s/raycluster.yaml --space spaces/full.py --render-rayjob k8s/rayjob.yaml
# --max-concurrent below is the worker groups' maxReplicas x trials per pod (tools/k8s_concurrency.py).
#
#   kubectl apply -f k8s/rayjob.yaml && kubectl logs -f job/resnet-search-full
"""


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/k8s_concurrency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path, help="a RayCluster or RayJob manifest (k8s/raycluster.yaml)")
    p.add_argument("--space", type=Path, help="read cpus_per_trial / gpus_per_trial from this space's SETTINGS")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--render-rayjob", type=Path, metavar="PATH", help="also write the RayJob manifest there")
    args = p.parse_args(argv)
    settings = space_settings(args.space) if args.space else {}
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else settings.get("cpus_per_trial", 1)
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else settings.get("gpus_per_trial", 0)
    manifest = yaml.safe_load(args.manifest.read_text())
    trials = max(capacity(cluster_spec(manifest), cpus, gpus), 1)
    print(trials)
    if args.render_rayjob:
        job = json.loads(json.dumps(render_rayjob(manifest, trials)))  # plain copies: no YAML anchors in the output
        write_atomic(args.render_rayjob, HEADER + yaml.safe_dump(job, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
