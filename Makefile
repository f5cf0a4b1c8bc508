# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -c constraints.txt
STAMP := $(VENV)/.cinepregen-installed

.PHONY: setup test lint demo extension clean chromium poppler

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --quiet --upgrade pip
	$(PIP) --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The review page is tested in headless Chromium (Debian's package); install it when it is missing.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

# The export tests read PDFs back with poppler's pdftotext and pdftoppm (Debian's poppler-utils).
poppler:
	@command -v pdftotext >/dev/null && command -v pdftoppm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq poppler-utils; }

test: lint chromium poppler
	$(VENV)/bin/pytest
	bash tests/blender45/run.sh

demo: $(STAMP)
	$(VENV)/bin/cinepregen demo --out out/demo

extension: $(STAMP)
	$(VENV)/bin/cinepregen extension build --out dist

clean:
	rm -rf dist out .pytest_cache
