# `make test` and `make demo` create .venv themselves on a fresh clone; installing is skipped
# while .venv is newer than pyproject.toml and constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast lint demo install clean mutation

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The lint gate runs first: CI enforces it through `make test`.
# Two workers: most of the suite's wall time is Ray, servers and drivers starting and waiting,
# which a second worker overlaps. A test file stays on one worker (its Ray or server is shared).
test: lint
	$(PY) -m pytest -n 2 --dist loadfile --durations=25

# Everything but the tests marked `integration` (they start Ray, a server or a subprocess):
# the quick run while changing code, under 2 minutes on 2 cores. `make test` runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration" -n 2 --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check oracle silo tests bench
	$(VENV)/bin/mypy

# The main job: the quickstart study (MNIST-1D, Oracle vs SILO and baselines) on local Ray.
demo: $(STAMP)
	$(VENV)/bin/silo-oracle run studies/quickstart.yaml
	@echo "Open results/quickstart/report.html (or read results/quickstart/report.md)."

# Mutation testing of the modules where a silent bug changes the science or loses data
# ([tool.mutmut] in pyproject.toml); long (tens of minutes on 2 cores), not part of `make test`.
mutation: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	rm -rf mutants
	$(VENV)/bin/mutmut run || true
	$(PY) bench/mutation_score.py

clean:
	rm -rf $(VENV) .pytest_cache
