#!/usr/bin/env bash
# Install the project into a venv from requirements.lock: tools/install_venv.sh [VENV]   (default .venv)
#
# Called by `make` (.venv/.installed), clusters/setup_node.sh and nothing else; the Dockerfile runs the same two
# pip commands (CUDA build). Run from the repository root.
#
# Which torch: the lock pins PyPI's torch, the CUDA build (~6 GB with its nvidia-* wheels). A machine without a
# working nvidia-smi gets the CPU build of the same version from PyTorch's CPU index instead (about a tenth of
# that); every other package still comes from the lock, hashes checked. If that index cannot be reached, one line
# says so and the CUDA build from the lock is installed (it runs on a CPU too). TORCH_BUILD=cpu|cuda forces one.
#
# Tests source this file for its functions (tests/test_install_venv.py): nothing runs when it is sourced.
set -euo pipefail

LOCK=${LOCK:-requirements.lock}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
# The lock's packages that exist only for the CUDA build: the CPU path leaves them out.
CUDA_ONLY='^(torch|torchvision|triton|cuda-[a-z0-9-]+|nvidia-[a-z0-9-]+)=='

# cuda when nvidia-smi is on PATH and lists a GPU; cpu otherwise.
gpu_build() {
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        echo cuda
    else
        echo cpu
    fi
}

# Why PyTorch's CPU index cannot be reached (empty output: it can). One short try, no retries: DNS that fails
# fails at once, a firewall that drops packets costs at most the timeout.
cpu_index_problem() {
    "${PYTHON:-python3}" - "$CPU_INDEX" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=15).close()
except Exception as e:  # any failure means: use the lock's build
    print(f"{type(e).__name__}: {getattr(e, 'reason', e)}")
PY
}

# The build to install: TORCH_BUILD when set, else cuda on a GPU machine, else cpu if its index answers.
# Prints the choice on stdout and, when it falls back, the one line why on stderr.
choose_build() {
    if [[ -n "${TORCH_BUILD:-}" ]]; then
        [[ "$TORCH_BUILD" == cpu || "$TORCH_BUILD" == cuda ]] || {
            echo "TORCH_BUILD is '$TORCH_BUILD', but must be cpu or cuda (or unset: chosen from nvidia-smi)" >&2; return 2; }
        echo "$TORCH_BUILD"; return 0
    fi
    if [[ "$(gpu_build)" == cuda ]]; then echo cuda; return 0; fi
    local problem
    problem=$(cpu_index_problem)
    if [[ -n "$problem" ]]; then
        echo "No GPU here, but PyTorch's CPU index $CPU_INDEX cannot be reached ($problem): installing the CUDA build from $LOCK instead (~6 GB; it runs on CPU too)." >&2
        echo cuda
    else
        echo cpu
    fi
}

# The lock without the CUDA-only packages (each is a requirement line followed by its indented hash/via lines).
lock_without_cuda() {
    awk -v pat="$CUDA_ONLY" '/^[A-Za-z0-9]/ { skip = ($0 ~ pat) } !skip' "$1"
}

# The version the lock pins for a package: locked_version torch -> 2.14.1
locked_version() {
    sed -n "s/^$1==\([^ ]*\).*/\1/p" "$LOCK"
}

install_venv() {
    local venv=${1:-.venv} build
    build=$(choose_build)
    test -x "$venv/bin/pip" || "${PYTHON:-python3}" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    if [[ "$build" == cuda ]]; then
        echo "Installing $LOCK into $venv (torch: the CUDA build; a few minutes)"
        "$venv/bin/pip" install -q --require-hashes -r "$LOCK"
    else
        echo "Installing $LOCK into $venv (torch: the CPU build from $CPU_INDEX; a few minutes)"
        local rest
        rest=$(mktemp)
        lock_without_cuda "$LOCK" >"$rest"
        # --no-deps: the lock is complete, and torch (absent from this file) comes next.
        "$venv/bin/pip" install -q --require-hashes --no-deps -r "$rest"
        rm -f "$rest"
        # Pinned by version, not hash: the CPU index was unreachable when the lock was made (docs/clusters.md).
        "$venv/bin/pip" install -q --no-deps --index-url "$CPU_INDEX" \
            "torch==$(locked_version torch)+cpu" "torchvision==$(locked_version torchvision)+cpu"
        "$venv/bin/pip" check
    fi
    "$venv/bin/pip" install -q --no-deps -e .
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    install_venv "$@"
fi
