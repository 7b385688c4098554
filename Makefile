# make demo: set up (or reuse) .venv and run the main job on the built-in dataset.
# make test: set up (or reuse) .venv and run the test suite; make test-fast: the tier without Ray or searches.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -c constraints.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) search/run.py --space spaces/quick.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed  # the inner loop: no Ray, no search, no cluster (tests/conftest.py)
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
