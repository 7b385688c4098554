#!/usr/bin/env bash
# Set up one Ray node for resnet-search: bash ~/resnet-search/clusters/setup_node.sh [--reuse-venv DIR]
#
# Every cluster file runs it as its first setup command (cluster.yaml on AWS, clusters/onprem.yaml on your own
# machines, clusters/aws-docker.yaml skips it: the image has it all), after file_mounts copied the repository to
# ~/resnet-search. So what tools/loopback_ray_up.sh runs for real is what an AWS or on-prem node runs.
# Safe to rerun (`ray up` reruns it on every update): the install is skipped while the lock is unchanged.
#
#   (no flag)          ~/resnet-search/.venv from requirements-cluster.lock (tools/install_venv.sh: CUDA torch on a GPU
#                      node, CPU torch elsewhere)
#   --reuse-venv DIR   no install: ~/resnet-search/.venv layered over an environment already built from the same
#                      lock (DIR), running the copied code. For CI's loopback run, where a full install per run
#                      would take minutes (tools/loopback_ray_up.sh --full-install does it once).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
reuse=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --reuse-venv) reuse=$(cd "$2" && pwd); shift 2 ;;
        *) echo "setup_node.sh: unknown argument '$1' (usage: setup_node.sh [--reuse-venv DIR])" >&2; exit 2 ;;
    esac
done

if [[ -f ~/.ray/auth_token ]]; then chmod 600 ~/.ray/auth_token; fi  # token auth refuses a readable token

# A node's lock: make's plus the `cluster` extra (ray[default]: dashboard and autoscaler; boto3).
export LOCK=requirements-cluster.lock
# The lock is for Python 3.11 (its header): use it where the node has it.
PYTHON=$(command -v python3.11 || command -v python3)
export PYTHON

if [[ -n "$reuse" ]]; then
    site=$(echo "$reuse"/lib/python3*/site-packages)
    test -d "$site" || { echo "setup_node.sh: $reuse is not a venv (no lib/python3*/site-packages)" >&2; exit 2; }
    "$reuse/bin/python" -m venv --without-pip --clear .venv
    # The copied code first, then the reused environment's packages (a path in a .pth file adds the folder only;
    # that environment's own .pth files, such as its editable install of another checkout, are not read).
    echo "$repo" > "$(echo .venv/lib/python3*/site-packages)/00-resnet-search.pth"
    echo "$site" > "$(echo .venv/lib/python3*/site-packages)/01-reused-venv.pth"
    for tool in ray tensorboard; do  # the CLIs Ray's start commands and users call, on this venv's python
        sed "1s|.*|#!$repo/.venv/bin/python|" "$reuse/bin/$tool" > ".venv/bin/$tool"
        chmod +x ".venv/bin/$tool"
    done
    printf '#!/bin/sh\nexec %s -m cli.main "$@"\n' "$repo/.venv/bin/python" > .venv/bin/resnet-search
    chmod +x .venv/bin/resnet-search
elif [[ -f .venv/.installed ]] && cmp -s "$LOCK" .venv/.installed; then
    echo "setup_node.sh: .venv is up to date with $LOCK"
else
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then  # Debian/Ubuntu ship venv separately
        sudo=$([[ $(id -u) == 0 ]] || echo sudo)
        $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv
    fi
    bash tools/install_venv.sh .venv
    cp "$LOCK" .venv/.installed  # what was installed: a later run compares
fi

# Every later command (ray start/stop, ray exec, the driver) sees the venv and token auth mode; appended once.
for line in "export PATH=\"$repo/.venv/bin:\$PATH\"" 'export RAY_AUTH_MODE=token'; do
    grep -qxF "$line" ~/.bashrc 2>/dev/null || echo "$line" >> ~/.bashrc
done
echo "setup_node.sh: $(.venv/bin/python -c 'import ray, sys; print(f"Ray {ray.__version__}, Python {sys.version.split()[0]}")') in $repo/.venv"
