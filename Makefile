# posassist: `make demo` runs the whole system locally, `make test` runs the tests.
# On a fresh machine with only python3 these create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The agent's own dependencies under Python 3.8, to prove it runs on Windows 7 tills' Python.
PYTHON38 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8.*/bin/python3.8 /usr/bin/python3.8 /usr/local/bin/python3.8))
VENV38   := .venv38
STAMP38  := $(VENV38)/.installed-stamp

.PHONY: demo test check bench bench-parts py38 py38-leg py38-leg-end venv clean typecheck-tree \
    agent-wheel package

# The Python 3.8 leg of `make test`: .venv38 and the tests marked py38 (the agent under the tills'
# Python). Without a Python 3.8, `make test` runs everything else and ends by saying the leg was
# skipped and how to enable it; CI (CI=true) requires the leg and fails at once without it.
PY38_HOWTO := to run it: make test PYTHON38=/path/to/python3.8 (docs/windows7.md\#the-python-38-leg)
ifeq ($(PYTHON38),)
PY38_TESTS := -m "not py38"
endif

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(STAMP38): constraints-py38.txt
	@test -n "$(PYTHON38)" || { echo "no Python 3.8 found; set PYTHON38=/path/to/python3.8 (docs/windows7.md)"; exit 1; }
	$(PYTHON38) -m venv $(VENV38)
	$(VENV38)/bin/python -m pip install --quiet --disable-pip-version-check -r constraints-py38.txt
	@# the agent's own packages, linked in the installed layout (posassist.agent, posassist.protocol)
	mkdir -p $(VENV38)/src/posassist
	ln -sfn $(CURDIR)/agent $(VENV38)/src/posassist/agent
	ln -sfn $(CURDIR)/protocol $(VENV38)/src/posassist/protocol
	ln -sfn $(CURDIR)/client $(VENV38)/src/posassist/client
	$(VENV38)/bin/python -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'posassist-checkout.pth').write_text('$(CURDIR)/$(VENV38)/src\\n')"
	touch $(STAMP38)

venv: $(STAMP) py38-leg

ifneq ($(PYTHON38),)
py38-leg: $(STAMP38)
else ifeq ($(CI),true)
py38-leg:
	@echo "error: no Python 3.8 found, and CI (CI=true) requires the Python 3.8 leg; $(PY38_HOWTO)" >&2
	@exit 1
else
py38-leg:
	@echo "note: no Python 3.8 found: the Python 3.8 leg will be skipped; $(PY38_HOWTO)"
endif

py38-leg-end:
ifeq ($(PYTHON38),)
	@echo "SKIPPED: the Python 3.8 leg did not run (no Python 3.8 found): the agent was not tested"
	@echo "under the tills' Python (tests marked py38, .venv38); $(PY38_HOWTO)"
else
	@echo "the Python 3.8 leg ran ($(PYTHON38))"
endif

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Tests run in parallel, three workers per core (pytest-xdist; idle workers steal queued tests, so
# the slow end-to-end tests do not pile up on one). The tests wait on a relay or a till for about
# 60% of their time (POSASSIST_TEST_CPU=FILE records each one's CPU): with two workers per core the
# cores idled. Each test makes its own ports and folders. protocol/ branch coverage must be 100%
# from the protocol's own tests (a first, quick pass, parallel too); then everything runs in the CI
# profile, where the hypothesis byte fuzzers run 10,000 examples, without the coverage tracer's cost.
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 3 )))

test: $(STAMP) py38-leg
	@# Bytecode made once, beside the coverage pass, even where PYTHONDONTWRITEBYTECODE is set:
	@# else every worker rewrites every test module (~10 s of CPU each) and every relay or till
	@# the tests start compiles the package again.
	@env -u PYTHONDONTWRITEBYTECODE sh -c '$(BIN)/python -m compileall -q -j 0 protocol relay \
	    agent client console >/dev/null; $(BIN)/python -m pytest -q -p no:cacheprovider \
	    --collect-only tests >/dev/null' & warm=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(WORKERS) tests/protocol \
	    --cov=protocol --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100; \
	covered=$$?; wait $$warm; exit $$covered
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -n $(WORKERS) --dist worksteal --durations=15 \
	    $(PY38_TESTS) tests
	@$(MAKE) --no-print-directory py38-leg-end

# mypy follows no import hooks: it checks the packages through links in the installed layout
typecheck-tree:
	@mkdir -p .typecheck/posassist
	@for p in protocol relay agent console client; do ln -sfn ../../$$p .typecheck/posassist/$$p; done

check: $(STAMP) typecheck-tree
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory py38

# agent/, client/ and protocol/ must run on Python 3.8 (Windows 7 tills): docs/windows7.md
py38: $(STAMP)
	$(BIN)/vermin -t=3.8- --no-tips --violations -q agent protocol client tests/fakes/simprinter.py packaging/windows

# The store agent's own wheel for tills (Python 3.8+, only the agent's dependencies): docs/packaging.md
agent-wheel: $(STAMP)
	$(BIN)/python scripts/build_agent_wheel.py --out dist

# The till packages: a Linux .deb (/opt/posassist, systemd) and a Windows offline bundle (.zip);
# needs only python3 (3.11), pip's access to PyPI and dpkg-deb. docs/install-linux.md, docs/install-windows.md
package:
	@test -n "$(PYTHON38)" || { echo "no Python 3.8 found; set PYTHON38=/path/to/python3.8 (docs/windows7.md)"; exit 1; }
	$(PYTHON) scripts/build_packages.py --out dist --python38 $(PYTHON38)

# The capacity suite (benchmarks/suite.py): writes benchmarks/results/<date>.md and its PNG
# plots. Its plotting library comes with the [bench] extra, installed here and never by `make test`.
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.suite
	@# 200 real posassist-agent processes (~7 GB): results/<date>-real-agents.md
	$(BIN)/python -m benchmarks.bench_real_agents

# Every single-purpose benchmark in turn (each also runs alone: python -m benchmarks.bench_x)
bench-parts: $(STAMP)
	@for b in benchmarks/bench_*.py; do \
	    echo "== $$b"; $(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; \
	done

clean:
	rm -rf $(VENV) $(VENV38) .typecheck demo-data .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage*
