# `make distill` / `make bench` / `make report` / `make serve` / `make test` set everything up on first use.
PROFILE ?= default
PORT ?= 8000
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: setup distill test clean-artifacts help

help:
	@echo "make distill [PROFILE=default|smoke|full]  train teacher and students, write reports/<profile>/accuracy.csv"
	@echo "make test                                 run the test suite (what CI runs)"
	@echo "make serve [PROFILE=...] [PORT=8000]      web page + JSON API comparing teacher and students on 127.0.0.1"

$(STAMP): requirements.txt requirements-assets.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

distill: setup
	$(PY) -m distill --profile $(PROFILE) $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-artifacts:
	rm -rf artifacts/$(PROFILE) reports/$(PROFILE)

.PHONY: serve
serve: setup
	$(PY) -m serve --profile $(PROFILE) --port $(PORT)
