# make experiment=NAME [args="key=value ..."]   trains (the default goal); `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
experiment ?= smoke
args ?=

.DEFAULT_GOAL := train
.PHONY: train test data clean help

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

train: $(STAMP) ## train an experiment: make experiment=mamba_long args="trainer.max_epochs=2"
	$(PY) -m lightning_ssmvid.train experiment=$(experiment) $(args)

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -x -q

data: $(STAMP) ## write the experiment's synthetic data set (cached): make data experiment=NAME
	$(PY) -m lightning_ssmvid.data.prepare experiment=$(experiment) $(args)

clean: ## remove run folders and caches (keeps data/ and .venv)
	rm -rf logs outputs multirun wandb .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'
