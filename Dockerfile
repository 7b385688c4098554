# resnet-search on Ray's own image: the same Ray as pyproject.toml, Python 3.11 (the lock's), and the CUDA build of
# torch from requirements-cluster.lock (every extra: ray[default], boto3). Used by clusters/aws-docker.yaml, k8s/ and slurm/ (docs/clusters.md "Docker").
#
#   docker build -t resnet-search:0.1.0 .
#   docker run --rm resnet-search:0.1.0                                   # resnet-search --help
#   docker run --rm --gpus all resnet-search:0.1.0 resnet-search run --space spaces/quick.py --smoke-test
#
# Not built in this repository's CI (no Docker engine or registry there); tests/test_dockerfile.py checks its pins.
#
# The tag's CUDA matches the torch wheel's (torch 2.14.1 from PyPI is built for CUDA 13.0 and brings its own CUDA
# runtime as nvidia-* wheels, so the host needs only a driver for CUDA 13). Ray stopped publishing ray-ml images
# after 2.49; rayproject/ray is the base to use.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130
FROM ${RAY_IMAGE}

WORKDIR /home/ray/resnet-search

# The dependencies first (their own layer: it changes only with the lock), every file's hash checked.
COPY --chown=ray:users requirements-cluster.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-cluster.lock

# Then the project, at the path every cluster file uses (~/resnet-search), without touching the pins above.
COPY --chown=ray:users pyproject.toml constraints.txt README.md ./
COPY --chown=ray:users core core
COPY --chown=ray:users compat compat
COPY --chown=ray:users worker worker
COPY --chown=ray:users trainable trainable
COPY --chown=ray:users search search
COPY --chown=ray:users ensemble ensemble
COPY --chown=ray:users spaces spaces
COPY --chown=ray:users cli cli
RUN pip install --no-cache-dir --no-deps -e . && resnet-search --help >/dev/null

# No ENTRYPOINT: Ray's cluster launcher starts the container with `bash`, and KubeRay with its own command.
CMD ["resnet-search", "--help"]
