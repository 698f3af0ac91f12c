# Two set-up commands for users: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt

.PHONY: demo test lint typecheck pytest kafka kafka-if-possible promtool promtool-if-possible venv lock clean

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

# promtool checks the alert rules (tests/unit/test_alert_rules.py): Debian's prometheus
# package provides it. Installed once per machine as root, like the Kafka jars; a no-op once
# promtool is on the PATH. Without it the rule tests skip with the reason, and fail under CI=true.
promtool:
	command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 prometheus >/dev/null; }

promtool-if-possible:
	-$(MAKE) --no-print-directory promtool

# Two pytest sessions side by side, the unit tests beside the integration tests (tests/suite.py);
# pytest exits 5 when it collects nothing: that is a failure of the suite, and make treats it so.
pytest: $(STAMP)
	$(BIN)/python tests/suite.py

test: lint typecheck kafka-if-possible promtool-if-possible pytest

# Re-resolve the pinned dependency set (run by a developer on purpose, never by CI).
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet -e '.[dev]'
	.lockvenv/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' > $(CONSTRAINTS)
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
