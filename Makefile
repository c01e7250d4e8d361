# `make test` and `make demo` create .venv themselves on a fresh clone; installing is skipped
# while .venv is newer than pyproject.toml and constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The main job: the quickstart study (MNIST-1D, Oracle vs SILO and baselines) on local Ray.
demo: $(STAMP)
	$(VENV)/bin/silo-oracle run studies/quickstart.yaml
	@echo "Open results/quickstart/report.html (or read results/quickstart/report.md)."

clean:
	rm -rf $(VENV) .pytest_cache
