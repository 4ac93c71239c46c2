# dicom-node — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.yaml
PACKAGES := dicom_node inference storage

.PHONY: run install install-test system-deps lint typecheck test demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

## A regular (not editable) install: setuptools warns at length on every editable one.
install: $(BIN)/python
	$(BIN)/pip install --quiet .

## Install the node and run it on the embedded defaults (SQLite, local spool, CPU fallback).
run: install
	$(BIN)/dicom-node serve --config $(CONFIG)

system-deps:
	sh tools/install-system-deps.sh

install-test: system-deps $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

lint:
	$(BIN)/ruff check $(PACKAGES) tests bench tools
	$(BIN)/ruff format --check $(PACKAGES) tests bench tools
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

## Install everything the tests need (Debian packages too) and run the whole suite.
test: install-test lint typecheck
	$(BIN)/pytest

## A simulated patient through a local Orthanc and the node; prints where the figure is.
demo: system-deps $(BIN)/python
	$(BIN)/pip install --quiet -e '.[training]'
	$(BIN)/python tools/demo.py $(DEMO_ARGS)
