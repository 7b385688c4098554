#!/usr/bin/env bash
# Fill a wheel folder for an offline GPU node: everything the project needs EXCEPT torch and torchvision,
# which the node's container already has as a CUDA build (benchmarks/tools/gpu_suite.py --wheels keeps them).
# Run it on a machine with package access; the node's Python version and CPU architecture decide the wheels:
#
#     bash benchmarks/tools/gpu_wheels.sh 3.12 ./wheels            # x86_64 node with Python 3.12
#     bash benchmarks/tools/gpu_wheels.sh 3.10 ./wheels aarch64    # e.g. a GH200 node
#
# Needs Python >= 3.11 here (tomllib reads pyproject.toml; set PYTHON=... to choose one) and pip.
# Then copy ./wheels and this checkout to the node and run: python -m benchmarks.tools.gpu_suite --wheels ./wheels
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: bash benchmarks/tools/gpu_wheels.sh PYTHON_VERSION DIR [x86_64|aarch64]   (e.g. 3.12 ./wheels)" >&2
    exit 2
fi
PYVER=$1 DIR=$2 ARCH=${3:-x86_64}
if ! [[ $PYVER =~ ^3\.[0-9]+$ ]]; then
    echo "PYTHON_VERSION is '$PYVER', but must look like 3.12 (the node's: python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')." >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")/../.." && pwd)  # the repository root
PY=${PYTHON:-python3}
mkdir -p "$DIR"
REQS=$(mktemp)
trap 'rm -f "$REQS"' EXIT

# The project's dependencies and test extras from pyproject.toml, less torch/torchvision and less timm,
# whose own requirements include torch (timm comes next, without dependencies).
"$PY" - "$HERE/pyproject.toml" > "$REQS" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower()
    if name not in ("torch", "torchvision", "timm"):
        print(req)
EOF
TIMM=$(grep -o '"timm==[^"]*"' "$HERE/pyproject.toml" | tr -d '"')

# manylinux_2_28 covers current NVIDIA containers (glibc >= 2.28); 2014/2_17 wheels run there too.
PLATFORMS=(--platform "manylinux_2_28_$ARCH" --platform "manylinux_2_17_$ARCH" --platform "manylinux2014_$ARCH")
download() {
    "$PY" -m pip download --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" \
        --dest "$DIR" "$@"
}
download -r "$REQS"
download --no-deps "$TIMM"
download huggingface_hub pyyaml safetensors   # timm's requirements other than torch/torchvision
download "setuptools>=68" wheel               # to build the project itself (pip install -e .) offline

if ls "$DIR" | grep -Eiq '^(torch|torchvision|nvidia_|triton)-'; then
    echo "A torch/CUDA wheel reached $DIR: some requirement pulls torch in. Remove it; the node must keep its own." >&2
    exit 1
fi
echo "$(ls "$DIR" | wc -l) wheels in $DIR for CPython $PYVER on $ARCH. On the node: python -m benchmarks.tools.gpu_suite --wheels $DIR"
