# moe-import: install, demo, test, check, bench. Every target creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
LOCK_VENV := .venv-lock
# pytest exits 5 when it selects no test: not a failure of the code.
PYTEST := $(BIN)/python -m pytest -q

.PHONY: install demo test test-fast check lint docs lock bench clean

install: $(STAMP)

# Reinstall only when the declared dependencies or their pinned versions change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) pip
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# Re-resolve every dependency in a fresh venv and pin what it got (run after editing
# pyproject.toml's dependencies, or to take newer releases).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Pinned by 'make lock' ($$($(LOCK_VENV)/bin/python -V)); 'make install' uses it."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude moe-import; \
	} > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

demo: install
	$(BIN)/python -m scripts.demo

# The whole suite (what .ci/run runs), six at a time with work stealing (the long end-to-end
# tests do not gather at the end): they mostly wait on sockets and sleeps. Pace is asserted on a virtual clock (tests/virtual_clock.py); the
# real-clock pace tests keep only margins a busy core cannot break, so none runs alone.
test: install
	$(PYTEST) -n 6 --dist worksteal || test $$? -eq 5

# In-process tests only, for the edit-test loop: no test that starts the sandbox, the CLI,
# redis-server or any other process (tests/conftest.py fails one that does, naming the
# marker it needs), and none marked slow.
FAST_TESTS := not sandbox and not subprocess and not redis and not slow and not e2e
test-fast: install
	MOE_TEST_TIER=fast $(PYTEST) -n 2 -m "$(FAST_TESTS)" || test $$? -eq 5

# Formatting, lint and types.
check: install
	$(BIN)/ruff format --check importer tests scripts
	$(BIN)/ruff check importer tests scripts
	$(BIN)/mypy importer tests scripts

lint: check

# docs/REFERENCE.md's job-file keys and CLI flags, rendered from the pydantic models and the
# argparse parser (scripts/reference_docs.py); tests/test_reference_docs.py fails when stale.
docs: install
	$(BIN)/cog -r -I . docs/REFERENCE.md

# BENCH_ARGS="--runs 1" for a quick look; the README's figures come from the default 3.
# Then incremental sync at 5M customers, events beside users (median of 3 rounds), and the
# events ledger at 10M events (bytes an event, lookups and writes a second).
bench: install
	$(BIN)/python -m scripts.bench $(BENCH_ARGS)
	$(BIN)/python -m scripts.bench_sync
	$(BIN)/python -m scripts.bench_slices
	$(BIN)/python -m scripts.bench_events --runs 3
	$(BIN)/python -m scripts.bench_ledger --events 10000000

clean:
	rm -rf out .pytest_cache .mypy_cache bench_data
