# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -c constraints.txt
STAMP := $(VENV)/.cinepregen-installed

.PHONY: setup test lint demo extension clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --quiet --upgrade pip
	$(PIP) --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest

demo: $(STAMP)
	$(VENV)/bin/cinepregen demo --out out/demo

extension: $(STAMP)
	$(VENV)/bin/cinepregen extension build --out dist

clean:
	rm -rf dist out .pytest_cache
