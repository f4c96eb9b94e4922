# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: venv demo test test-fast bench lint clean-demo dvc.yaml dvc-repro

venv: $(STAMP)

# torch/torchvision are pinned to the builds that lie on this kind of machine's disk (see README, "Set-up").
$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The workflow's shell commands call `python -m stages...`: put the venv first on PATH.
# (profiles/default, next to the Snakefile, is loaded by Snakemake itself)
SNAKEMAKE := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake

demo: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report results/report.html

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# dvc.yaml is generated from the Snakemake DAG (workflow/scripts/make_dvc.py); regenerate after changing rules/params.
dvc.yaml: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) workflow/scripts/make_dvc.py

dvc-repro: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

lint: $(STAMP)
	$(SNAKEMAKE) --lint

clean-demo:
	rm -rf data/raw/*_demo data/interim/*_demo results/*_demo results/tables results/figures results/table.* \
	    results/metrics.json results/report.html logs
