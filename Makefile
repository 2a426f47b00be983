# The two commands a new user needs: `make serve` and `make test`.
# Each sets up what it needs first (a virtualenv in .venv), so both work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/demo.yaml
HOST   ?= 127.0.0.1
PORT   ?= 8000

DURATION ?= 60s
MODEL  ?= breast-cancer

.PHONY: serve test lint models load clean help test-tools sim

help:
	@echo "make serve   set up and start the gateway on $(CONFIG) at http://$(HOST):$(PORT)"
	@echo "make test    set up (with the dev extras) and run lint, type checks and the tests"
	@echo "make fuzz    FUZZ_CASES (100000) hostile requests at one server; its memory at 10k and at the end"
	@echo "make sim     the judge's scenario matrix, 500 simulated rollouts a case (SIM_RUNS)"
	@echo "make models  rebuild the demo models in models/ from scikit-learn's bundled datasets"
	@echo "make load    drive a running gateway with wrk for DURATION (default 60s)"
	@echo "make bench   canarygate side by side with its references and MLServer (see loadtests/)"

$(VENV)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# With an extra: .dev-installed for `make test`, .bench-installed for `make bench`.
$(VENV)/.%-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $(VENV)/.run-installed $@

serve: $(VENV)/.run-installed
	$(VENV)/bin/canarygate serve --config $(CONFIG) --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests models loadtests
	$(VENV)/bin/mypy

# The dashboard's browser test drives Debian's Chromium (playwright never downloads one), the
# deploy test runs promtool (Debian's prometheus) and the shared-state tests start their own
# redis-server: installed here when missing (needs root), as `load` installs wrk.
test-tools:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	@command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

# Two pytest processes share what can run side by side (most tests wait on servers, not the
# CPU); the tests marked `serial` judge throughput, latency or timeouts, so they run after, alone.
TEST_PROCS ?= 2
test: lint test-tools
	$(PY) -m pytest -n $(TEST_PROCS) -m "not serial"
	$(PY) -m pytest -m serial

# The judge's seeded scenario matrix through the real controller (tests/judge_sim.py): the
# README's table. SIM_RUNS rollouts a case; SIM_ONLY keeps the cases whose name contains it;
# SIM_SKIP="a|b" leaves out the cases whose name contains a or b.
SIM_RUNS ?= 500
SIM_ONLY ?=
sim: $(VENV)/.dev-installed
	cd tests && ../$(PY) judge_sim.py $(SIM_RUNS) "$(SIM_ONLY)"

# The fuzz test of `make test` (tests/test_fuzz.py) with many more cases: every route, no 5xx,
# no hang, every 4xx counted; prints the server's resident memory after 10,000 cases and at
# the end, and fails when the end is more than 10 % above the 10,000 mark.
FUZZ_CASES ?= 100000
.PHONY: fuzz
fuzz: $(VENV)/.dev-installed
	FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest tests/test_fuzz.py -q -s -p no:cacheprovider

models: $(VENV)/.dev-installed
	$(PY) models/build.py

# wrk comes from Debian's packages; installed here when missing (needs root).
load:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	wrk -t1 -c32 -d$(DURATION) --latency -s loadtests/v2_infer.lua http://$(HOST):$(PORT) -- $(MODEL)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Side by side: bare Starlette, minimal ORT, canarygate (all on / recording off), MLServer;
# sets up wrk (apt) and MLServer (its own venv) when missing. See loadtests/README.md.
# BENCH_ARGS=--quick for a 1 x 5 s smoke run.
BENCH_ARGS ?=
SCALEOUT_ARGS ?=
.PHONY: bench
bench: $(VENV)/.bench-installed
	$(PY) -m loadtests.bench $(BENCH_ARGS)
	$(PY) -m loadtests.scaleout $(SCALEOUT_ARGS)
