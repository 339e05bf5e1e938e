# posassist: `make demo` runs the whole system locally, `make test` runs the tests.
# On a fresh machine with only python3 these create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check bench py38 venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# CI profile: hypothesis byte fuzzers run 10,000 examples; protocol/ branch coverage must be 100%.
test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest \
	    --cov=protocol --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory py38

# agent/ and protocol/ must run on Python 3.8 (Windows 7 tills): docs/windows7.md
py38: $(STAMP)
	$(BIN)/vermin -t=3.8- --no-tips --violations -q agent protocol

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do \
	    echo "== $$b"; $(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; \
	done

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage*
