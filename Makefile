# Two commands do all set-up on a fresh machine:
#   make app    create .venv (if missing), install the project, start the dashboard
#   make test   same install, then the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 5006

.PHONY: app test test-fast install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/mne-explorer serve --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow and not browser and not notebook" tests

bench: $(STAMP)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
