# make experiment=NAME [args="key=value ..."]   trains (the default goal); `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
experiment ?= smoke
args ?=

.DEFAULT_GOAL := train
.PHONY: train test lint data evaluate generate bench bench-gpu table reproduce sweep agent dashboard wandb-report clean help

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0  # first, so the project's torch range is met by the CPU wheel
	$(PY) -m pip install --quiet -e ".[all]"   # every extra the targets use (sweeps, SLURM, Optuna, dashboards, tests)
	touch $(STAMP)

train: $(STAMP) ## train an experiment: make experiment=mamba_long args="trainer.max_epochs=2"
	$(PY) -m lightning_ssmvid.train experiment=$(experiment) $(args)

test: $(STAMP) ## run the test suite (one pytest-xdist worker per core; a test file stays on one worker)
	$(PY) -m pytest -x -q -n auto --dist loadfile

lint: $(STAMP) ## ruff check (the rules in pyproject.toml)
	$(PY) -m ruff check lightning_ssmvid tests

data: $(STAMP) ## write the experiment's synthetic data set (cached): make data experiment=NAME
	$(PY) -m lightning_ssmvid.data.prepare experiment=$(experiment) $(args)

evaluate: $(STAMP) ## evaluate a checkpoint: make evaluate ckpt=PATH [args="split=test"]
	@test -n "$(ckpt)" || { echo "usage: make evaluate ckpt=PATH [args=\"split=test key=value ...\"]"; exit 2; }
	$(PY) -m lightning_ssmvid.evaluate ckpt_path=$(ckpt) $(args)

generate: $(STAMP) ## roll a checkpoint out: make generate ckpt=PATH frames=N [context=K] [out=FILE.mp4]
	@test -n "$(ckpt)" -a -n "$(frames)" || { echo "usage: make generate ckpt=PATH frames=N [context=K] [out=F]"; exit 2; }
	$(PY) -m lightning_ssmvid.generate ckpt_path=$(ckpt) frames=$(frames) $(if $(context),context=$(context)) $(if $(out),out=$(out)) $(args)

bench: $(STAMP) ## run every benchmark -> reports/bench/ (make bench args="--quick" for a smoke check)
	$(PY) -m lightning_ssmvid.bench $(args)

bench-gpu: $(STAMP) ## on a CUDA machine: scan parity, bf16 core steps, a short GPU run -> reports/bench/gpu.md (~8 min)
	$(PY) -m pip install --quiet -e ".[cuda]" || echo "mamba-ssm not installed: the CUDA scans will be reported as PyTorch fall-backs"
	$(PY) -m lightning_ssmvid.bench.gpu $(args)

table: $(STAMP) ## build reports/comparison.md from the runs' summary.json files
	$(PY) -m lightning_ssmvid.report

reproduce: $(STAMP) ## run every *_short experiment x arm x seed not yet finished (seeds="42 43 44" arms="cue generative"), then make table
	$(PY) -m lightning_ssmvid.reproduce --seeds $(or $(seeds),42 43 44) --arms $(or $(arms),cue generative) --pattern $(or $(pattern),'*_short') $(args)

sweep: $(STAMP) ## validate sweeps/NAME.yaml offline, create the W&B sweep: make sweep sweep=NAME [entity=E project=P]
	@test -n "$(sweep)" || { echo "usage: make sweep sweep=NAME (one of: $$(ls sweeps | sed 's/.yaml//' | xargs))"; exit 2; }
	$(PY) -m lightning_ssmvid.sweep create $(sweep) $(if $(entity),--entity $(entity)) $(if $(project),--project $(project))

agent: $(STAMP) ## run a W&B sweep agent here: make agent id=ENTITY/PROJECT/ID [count=N]
	@test -n "$(id)" || { echo "usage: make agent id=ENTITY/PROJECT/ID [count=N]"; exit 2; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m lightning_ssmvid.sweep agent $(id) $(if $(count),--count $(count))

dashboard: $(STAMP) ## create/update the W&B workspace views, one per family: make dashboard entity=E [project=P]
	$(PY) -m lightning_ssmvid.dashboard workspace $(if $(entity),--entity $(entity)) $(if $(project),--project $(project)) $(args)

wandb-report: $(STAMP) ## create/update the W&B report (comparison table + key plots): make wandb-report entity=E [project=P]
	$(PY) -m lightning_ssmvid.dashboard report $(if $(entity),--entity $(entity)) $(if $(project),--project $(project)) $(args)

clean: ## remove run folders and caches (keeps data/ and .venv)
	rm -rf logs outputs multirun wandb .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'
