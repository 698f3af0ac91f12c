# Two set-up commands for users: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt

.PHONY: demo test lint typecheck pytest kafka kafka-if-possible venv lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamalloc demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

# Real Apache Kafka for the tests and `streamalloc broker --kafka`: its jars are fetched from
# Maven Central once per machine into ${STREAMALLOC_KAFKA_JARS:-${XDG_CACHE_HOME:-~/.cache}/streamalloc/kafka-4.1.1},
# from deploy/kafka/pom.xml; once they are there this does nothing.
kafka: $(STAMP)
	$(BIN)/streamalloc broker --kafka --fetch-only

# Without the jars (no Maven, no Maven Central) the suite says why and runs on the embedded
# broker instead; under CI=true it fails (tests/conftest.py), so this step may fail quietly here.
kafka-if-possible: $(STAMP)
	-$(BIN)/streamalloc broker --kafka --fetch-only

# pytest exits 5 when it collects nothing: that is a failure of the suite, and make treats it so.
pytest: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

test: lint typecheck kafka-if-possible pytest

# Re-resolve the pinned dependency set (run by a developer on purpose, never by CI).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet -e '.[dev]'
	.lockvenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' > $(CONSTRAINTS)
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
