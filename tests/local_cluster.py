"""A real multi-node Ray cluster on this one machine, with token authentication.

A head and N worker nodes, each its own `ray start --block` process (own process group, own ports, own
resources and a custom resource "node:<name>" that tells the nodes apart), like cluster.yaml's cluster:
the head advertises CPU 0, so it runs no trials. A fresh token is generated per cluster with
`ray get-auth-token --generate` (HOME pointed at the cluster's private dir, so ~/.ray is never touched) and
every node is started with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<that file>.

Only the processes started here are ever stopped (by their process group); never `ray stop`, which
would kill every Ray instance on the machine, including other tests' and other people's.

    from local_cluster import LocalCluster
    with LocalCluster(tmp_dir, workers={"w1": 1, "w2": 1}) as cluster:
        subprocess.run([... "--address", cluster.address], env=cluster.env())
        cluster.kill_worker("w1")            # SIGKILL its process group: the node dies as a machine would

As a script (prints the address and the env to use, stops everything on Ctrl-C):

    python tests/local_cluster.py --workers 2 --cpus-per-worker 1
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))  # the venv's ray CLI, the same Ray as this interpreter
# Ray's own variables that must not leak in from whoever runs the tests (another cluster's token or address).
_SCRUBBED = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# The GCS declares a node dead after period x threshold without a health-check reply (defaults 3 s x 5 plus
# a 10 s timeout): shortened so a killed node is noticed in ~2-3 s, not ~30 s.
FAST_FAILURE_DETECTION = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                          "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "2",
                          # a test cluster has nothing to drain on shutdown (default: wait up to 30 s)
                          "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


_HANDED_OUT: set[int] = set()


def free_ports(n: int) -> list[int]:
    """n distinct free ports, none handed out before by this process. Binding port 0 one socket at a time
    can return the same port twice once the first socket is closed (it did: a node's node-manager and
    dashboard-agent ports collided and `ray start` refused), so all n sockets are held open together."""
    sockets, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
                _HANDED_OUT.add(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def base_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path
    resources: dict
    node_id: str | None = None
    killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    root: Path
    workers: dict = field(default_factory=lambda: {"w1": 1, "w2": 1})  # name -> CPUs
    env_extra: dict = field(default_factory=dict)  # for every node (and so every trial), e.g. a cache dir
    node_env: dict = field(default_factory=dict)   # node name -> env for that node only, e.g. its "local disk"
    object_store_mb: int = 100
    nodes: dict = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Unix sockets live under the temp dir and must stay < 108 chars: keep it short, not under pytest's tmp.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="raylc-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token_path: Path | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> "LocalCluster":
        try:
            self.token_path = self._generate_token()
            self._start_node("head", head=True, cpus=0)
            self._wait_for_nodes({"head"}, timeout)
            for name, cpus in self.workers.items():  # one at a time: two raylets starting at once on 2 cores
                self._start_node(name, head=False, cpus=cpus)  # can miss Ray's 30 s registration deadline
                self._wait_for_nodes({name}, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """SIGTERM each node's process group (ray start --block shuts its node down), SIGKILL what is left."""
        for node in reversed(list(self.nodes.values())):
            _signal_group(node.process, signal.SIGTERM)
        deadline = time.time() + 15
        for node in self.nodes.values():
            try:
                node.process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(node.process, signal.SIGKILL)  # raylet, workers, agents: anything that outlived it
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if not os.environ.get("LOCAL_CLUSTER_KEEP_LOGS"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def add_worker(self, name: str, cpus: int = 1, *, env: dict | None = None, wait: bool = True,
                   timeout: float = 60) -> Node:
        """Start one more worker node (a replacement, as the autoscaler would). env replaces the node's own
        environment (e.g. self.env(token=False) for a node without the token); wait=False returns at once."""
        node = self._start_node(name, head=False, cpus=cpus, env=env)
        if wait:
            self._wait_for_nodes({name}, timeout)
        return node

    def kill_worker(self, name: str) -> Node:
        """SIGKILL the node's whole process group (ray start, raylet, its trial processes): a lost machine."""
        node = self.nodes[name]
        node.killed_at = time.time()
        _signal_group(node.process, signal.SIGKILL)
        node.process.wait(10)
        return node

    # ---- clients ------------------------------------------------------------------------------------------
    def env(self, token: bool = True, extra: dict | None = None) -> dict:
        """Environment for a driver or CLI talking to this cluster (token=False: no token anywhere)."""
        env = base_env({**self.env_extra, **(extra or {})})
        if token:
            env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)})
        else:
            env["HOME"] = str(self._empty_home())  # not even ~/.ray/auth_token
        return env

    def alive_nodes(self, timeout: float = 60) -> list[dict]:
        """[{node_id, resources}] of the nodes the GCS considers alive (asked from a short-lived client)."""
        code = ("import json\n"
                "from ray._raylet import GcsClient\n"
                "from ray.core.generated.gcs_pb2 import GcsNodeInfo\n"
                f"infos = GcsClient(address={self.address!r}).get_all_node_info(\n"
                "    timeout=20, state_filter=GcsNodeInfo.GcsNodeState.ALIVE).values()\n"
                "print(json.dumps([{'node_id': i.node_id.hex(), 'resources': dict(i.resources_total)}\n"
                "                  for i in infos]))\n")
        proc = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"could not list the nodes of {self.address}:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def node_names(self) -> dict:
        """node id -> node name, for the nodes started here."""
        return {n.node_id: n.name for n in self.nodes.values() if n.node_id}

    def describe(self) -> str:
        return ", ".join(f"{n.name}={n.node_id[:8] if n.node_id else '?'}({n.resources.get('CPU', 0)} CPU"
                         f"{', killed' if n.killed_at else ''})" for n in self.nodes.values())

    # ---- internals ----------------------------------------------------------------------------------------
    def _empty_home(self) -> Path:
        home = self.root / "home-without-token"
        home.mkdir(exist_ok=True)
        return home

    def _generate_token(self) -> Path:
        home = self.root / "token-home"
        home.mkdir(exist_ok=True)
        proc = subprocess.run([RAY, "get-auth-token", "--generate"], env=base_env({"HOME": str(home)}),
                              capture_output=True, text=True, timeout=60)
        path = home / ".ray" / "auth_token"
        if proc.returncode != 0 or not path.exists():
            raise RuntimeError(f"ray get-auth-token --generate failed:\n{proc.stderr}")
        path.chmod(0o600)
        assert proc.stdout.strip() == path.read_text().strip()
        return path

    def _start_node(self, name: str, *, head: bool, cpus: int, env: dict | None = None) -> Node:
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists already")
        resources = {f"node:{name}": 1}
        ports = iter(free_ports(8))
        cmd = [RAY, "start", "--block", "--disable-usage-stats",
               f"--num-cpus={cpus}", "--num-gpus=0", f"--resources={json.dumps(resources)}",
               f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
               f"--node-manager-port={next(ports)}", f"--object-manager-port={next(ports)}",
               f"--dashboard-agent-listen-port={next(ports)}", f"--dashboard-agent-grpc-port={next(ports)}",
               f"--metrics-export-port={next(ports)}", f"--runtime-env-agent-port={next(ports)}"]
        if head:
            cmd += ["--head", f"--port={self.port}", f"--ray-client-server-port={next(ports)}",
                    "--include-dashboard=false", f"--dashboard-port={next(ports)}", f"--temp-dir={self.temp_dir}"]
        else:
            cmd += [f"--address={self.address}"]
        if env is None:
            env = self.env()
        env = {**env, **self.node_env.get(name, {}), **FAST_FAILURE_DETECTION}
        log = self.root / f"node-{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # own process group: killed alone, as a machine
        node = Node(name, process, log, {"CPU": cpus, **resources})
        self.nodes[name] = node
        return node

    def _wait_for_nodes(self, names: set, timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            for name in names:
                if not self.nodes[name].alive:
                    raise RuntimeError(f"node {name} exited (code {self.nodes[name].process.returncode}):\n"
                                       + self.nodes[name].log.read_text()[-3000:])
            try:
                alive = self.alive_nodes()
            except (RuntimeError, subprocess.TimeoutExpired):
                alive = []  # the GCS is not up yet
            by_name = {key[len("node:"):]: n["node_id"] for n in alive for key in n["resources"]
                       if key.startswith("node:") and key[len("node:"):] in self.nodes}
            for name, node_id in by_name.items():
                self.nodes[name].node_id = node_id
            if names <= set(by_name):
                return
            if time.time() > deadline:
                raise TimeoutError(f"nodes {sorted(names - set(by_name))} did not join {self.address} in {timeout} s")
            time.sleep(0.5)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the group we created with start_new_session; its id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--dir", type=Path, help="logs and the token (default: a new temp dir)")
    args = p.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="local-cluster-"))
    cluster = LocalCluster(root, workers={f"w{i + 1}": args.cpus_per_worker for i in range(args.workers)})
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the nodes too, like Ctrl-C
    with cluster:
        print(f"Ray cluster at {cluster.address}: {cluster.describe()}")
        print(f"Use it with:  RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={cluster.token_path} "
              f"python search/run.py --space spaces/quick.py --address {cluster.address}")
        print(f"Logs in {root}. Ctrl-C (or SIGTERM) stops these nodes, and only these.")
        try:
            while all(n.alive for n in cluster.nodes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
