#!/usr/bin/env bash
# `ray up` for real, on this machine: sshd on 127.0.0.1, clusters/onprem.yaml pointed at it, `ray up -y`, a smoke
# search through `ray exec`, its results checked, `ray down`, sshd stopped.
#
#   bash tools/loopback_ray_up.sh [--venv DIR] [--full-install] [--keep]
#
#   --venv DIR       the environment whose `ray` runs `ray up` (default: .venv); also the one the node reuses
#   --full-install   the node installs ~/resnet-search/.venv from requirements.lock (clusters/setup_node.sh without
#                    --reuse-venv: ~4 min and 6.6 GB here) instead of layering over DIR (CI's split form, seconds)
#   --keep           leave the work folder (logs, the node's home) for a look afterwards
#
# Everything runs inside private namespaces (unshare: network, process table, mounts), so nothing here can touch
# the machine's other Ray instances, ports or files (--full-install: all but the network): the loopback interface, the `ray stop` of Ray's start and down
# commands, and root's home (a copy of /etc/passwd, bind-mounted in the namespace only, points it at the work
# folder) are all this run's own; when the script ends, every process it started ends with it.
# Needs root (unshare, sshd), openssh-server and rsync: apt-get install -y openssh-server rsync.
#
# What it proves: the on-prem file passes Ray's own launcher end to end (SSH, rsync of file_mounts, setup_commands
# running clusters/setup_node.sh, head start with token auth and the autoscaler config, ray exec, ray down), and a
# search started that way on the cluster writes its results. What it does not: AWS (EC2 launch, IAM, security
# groups, S3, the DLAMI's Python), GPUs, and worker nodes (a second node on the same machine would be stopped by the
# head's `ray stop` and share its ports; tests/test_multinode.py covers multi-node searches on one machine).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/.venv full=0 keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) venv=$(cd "$2" && pwd); shift 2 ;;
        --full-install) full=1; shift ;;
        --keep) keep=1; shift ;;
        *) echo "loopback_ray_up.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [[ -z "${LOOPBACK_NAMESPACE:-}" ]]; then
    for tool in unshare /usr/sbin/sshd rsync ssh-keygen "$venv/bin/ray"; do
        command -v "$tool" >/dev/null || { echo "loopback_ray_up.sh: $tool is missing (apt-get install -y openssh-server rsync; --venv DIR for ray)" >&2; exit 2; }
    done
    [[ $(id -u) == 0 ]] || { echo "loopback_ray_up.sh: needs root (unshare and sshd)" >&2; exit 2; }
    args=(--venv "$venv"); [[ $full == 1 ]] && args+=(--full-install); [[ $keep == 1 ]] && args+=(--keep)
    # --full-install keeps the machine's network: the node's pip needs the package indexes (PyPI among them), so
    # that run shares the machine's ports (22 for sshd on 127.0.0.1, Ray's 6379/8265): run it on a quiet machine.
    net=$([[ $full == 1 ]] && echo "" || echo "--net")
    exec unshare $net --pid --fork --mount-proc env LOOPBACK_NAMESPACE=1 bash "$0" "${args[@]}"
fi

[[ $full == 1 ]] || ip link set lo up
work=$(mktemp -d /tmp/loopback-ray.XXXXXX)
home=$work/home
mkdir -p "$home/.ssh" /run/sshd
finish() {
    local rc=$?
    [[ -f $work/sshd.pid ]] && kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
    if [[ $rc != 0 || $keep == 1 ]]; then echo "loopback: logs and the node's home are in $work"; else rm -rf "$work"; fi
    exit $rc
}
trap finish EXIT

# root's home is $home for sshd's logins and for this script (the copy of /etc/passwd exists in this namespace only).
real_home=$HOME
sed "s|^root:\([^:]*\):0:0:\([^:]*\):[^:]*:|root:\1:0:0:\2:$home:|" /etc/passwd > "$work/passwd"
mount --bind "$work/passwd" /etc/passwd
export HOME=$home
# Ray's temp folder too: /tmp/ray/ray_current_cluster is what `--address auto` reads, here and for everyone else.
mkdir -p /tmp/ray "$work/tmp-ray"
mount --bind "$work/tmp-ray" /tmp/ray

touch "$home/.bashrc"
# The machine's pip settings (its package indexes), for the node's own pip: the node is this machine.
if [[ -f "$real_home/.config/pip/pip.conf" ]]; then
    mkdir -p "$home/.config/pip" && cp "$real_home/.config/pip/pip.conf" "$home/.config/pip/pip.conf"
fi
ssh-keygen -q -t ed25519 -N '' -f "$work/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
cp "$work/id_ed25519.pub" "$home/.ssh/authorized_keys"
chmod 700 "$home/.ssh" && chmod 600 "$home/.ssh/authorized_keys"
cat > "$work/sshd_config" <<CONF
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile $home/.ssh/authorized_keys
AcceptEnv none
Subsystem sftp internal-sftp
CONF
/usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
for _ in $(seq 50); do [[ -s $work/sshd.pid ]] && break; sleep 0.1; done

# The cluster's token, as docs/clusters.md has the user make it (in this run's home: file_mounts copy it).
RAY_AUTH_MODE=token "$venv/bin/ray" get-auth-token --generate >/dev/null
chmod 600 "$home/.ray/auth_token"

# clusters/onprem.yaml with this machine's addresses and the run's key; everything else as committed.
setup_flag=$([[ $full == 1 ]] && echo "" || echo " --reuse-venv $venv")
"$venv/bin/python" - "$repo/clusters/onprem.yaml" "$work/loopback.yaml" "$work/id_ed25519" "$setup_flag" <<'PY'
import sys, yaml
src, dst, key, setup_flag = sys.argv[1:]
config = yaml.safe_load(open(src))
# A name per run: Ray keys its SSH connection sharing (/tmp/ray_ssh_<user>/<cluster>, outside any namespace) by the
# cluster's name, so two runs with one name would send their commands down each other's connection.
config["cluster_name"] = "resnet-search-loopback-" + dst.split("/")[-2].split(".")[-1]
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
config["auth"] = {"ssh_user": "root", "ssh_private_key": key}
config["min_workers"] = config["max_workers"] = 0
setup = config["setup_commands"]
assert setup[0] == "bash ~/resnet-search/clusters/setup_node.sh", setup
setup[0] += setup_flag
yaml.safe_dump(config, open(dst, "w"), sort_keys=False)
PY

ray() { "$venv/bin/ray" "$@"; }
cd "$repo"  # file_mounts are relative to it, as for every `ray up`
start=$(date +%s)
echo "loopback: ray up (setup: clusters/setup_node.sh$setup_flag)"
# Once more if the head's start timed out: Ray gives its raylet a fixed 30 s to register (ray/_private/node.py), which
# a heavily loaded machine can miss; `ray up` is safe to rerun (it is what a user does then too).
if ! ray up -y --no-config-cache --disable-usage-stats "$work/loopback.yaml" > "$work/ray_up.log" 2>&1; then
    grep -q "timed out during startup" "$work/ray_up.log" || { tail -40 "$work/ray_up.log"; echo "loopback: ray up failed"; exit 1; }
    echo "loopback: the head's start timed out (load $(cut -d' ' -f1-3 /proc/loadavg)); ray up once more"
    ray up -y --no-config-cache --disable-usage-stats "$work/loopback.yaml" > "$work/ray_up_2.log" 2>&1 || {
        tail -40 "$work/ray_up_2.log"; echo "loopback: ray up failed twice"; exit 1; }
fi
up=$(( $(date +%s) - start ))
echo "loopback: ray up took ${up}s"

echo "loopback: smoke search through ray exec"
ray exec "$work/loopback.yaml" \
    'cd ~/resnet-search && resnet-search run --space spaces/quick.py --smoke-test --address auto --storage ~/results --name loopback' \
    > "$work/ray_exec.log" 2>&1 || { tail -40 "$work/ray_exec.log"; echo "loopback: the search failed"; exit 1; }
searched=$(( $(date +%s) - start - up ))

# Its results, on the node's disk (the same disk here): a leaderboard with finished trials, and the search's
# driver really joined the cluster ray up started (its session is the head's).
"$venv/bin/python" - "$home/results/loopback" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "leaderboard.csv")))
assert rows, "the leaderboard is empty"
assert (run / "best_config.json").exists()
print(f"loopback: {len(rows)} trial(s) in {run / 'leaderboard.csv'}, best val_acc {float(rows[0]['best_val_acc']):.3f}")
PY
ls "$work"/tmp-ray/session_*/logs/python-core-driver-* >/dev/null 2>&1 && grep -q "cluster at auto" "$work/ray_exec.log" ||
    { echo "loopback: the search did not run as a driver of the cluster ray up started"; exit 1; }

ray down -y "$work/loopback.yaml" > "$work/ray_down.log" 2>&1 || { tail -20 "$work/ray_down.log"; exit 1; }
if pgrep -f "gcs_server|raylet" >/dev/null; then echo "loopback: Ray still runs after ray down"; exit 1; fi
echo "loopback: ray down stopped every Ray process; total $(( $(date +%s) - start ))s (up ${up}s, search ${searched}s)"
echo "loopback: passed"
