# make demo: set up (or reuse) .venv and run the main job on the built-in dataset.
# make test: set up (or reuse) .venv and run the test suite; make test-fast: the tier without Ray or searches.
# make lock: regenerate requirements.lock (make's: the project and its tests) and requirements-cluster.lock (a
# cluster node's and the image's: every extra), every dependency pinned and hashed, from pyproject.toml + constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast clean-venv lock

# From the lock, hashes checked; CPU torch where there is no GPU (tools/install_venv.sh says which, and why).
$(VENV)/.installed: pyproject.toml constraints.txt requirements.lock tools/install_venv.sh
	PYTHON=$(PYTHON) bash tools/install_venv.sh $(VENV)
	touch $@

# pip-tools in a throwaway venv, so the lock never depends on what .venv holds. For Python 3.11 on Linux x86_64
# (the tested platform); the CUDA torch/torchvision of constraints.txt. pip-compile keeps the pins already in
# requirements.lock that still fit (LOCK_ARGS=--upgrade moves them) and records every file's hash that pip's
# indexes offer for each pin (PyPI's: all platforms and Pythons of that release).
LOCK_ARGS ?=
lock:
	rm -rf /tmp/resnet-search-piptools && $(PYTHON) -m venv /tmp/resnet-search-piptools
	/tmp/resnet-search-piptools/bin/pip install -q pip-tools==7.6.2
	/tmp/resnet-search-piptools/bin/pip-compile --quiet --generate-hashes --all-extras --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -c constraints.txt -o requirements-cluster.lock pyproject.toml
	# The same pins, fewer extras: seeded from the cluster lock, so the two never disagree on a shared package.
	cp requirements-cluster.lock requirements.lock
	/tmp/resnet-search-piptools/bin/pip-compile --quiet --generate-hashes --extra test --strip-extras \
	    --allow-unsafe --no-emit-index-url --no-emit-find-links -c constraints.txt -o requirements.lock pyproject.toml

demo: $(VENV)/.installed
	$(PY) search/run.py --space spaces/quick.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  # the inner loop: no Ray, no search, no cluster (tests/conftest.py)
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
