# Task Force Hub: every target is idempotent and safe to re-run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install kafka demo test broker-start broker-stop clean

## install: virtualenv in .venv, editable install with test extras, and the Kafka jars
install: $(STAMP) kafka

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

kafka: $(STAMP)
	$(BIN)/hub broker fetch

## demo: the whole flow on the local broker (started if needed)
demo: install
	$(BIN)/hub demo

## test: the full suite against a real broker (the suite starts and stops its own)
test: install
	$(BIN)/pytest

broker-start: install
	$(BIN)/hub broker start

broker-stop:
	test ! -x $(BIN)/hub || $(BIN)/hub broker stop

## clean: stop the broker and remove the venv and the runtime directory
clean: broker-stop
	rm -rf $(VENV) .hub .pytest_cache .hypothesis
