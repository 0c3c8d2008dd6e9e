# Two entry points (see README.md): `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
ALLENSDK_VENV ?= .venv-allensdk
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test lint format setup clean-results

$(VENV)/.installed: envs/requirements.txt envs/constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r envs/requirements.txt -c envs/constraints.txt
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(ALLENSDK_VENV)/.installed: envs/allensdk-requirements.txt envs/allensdk-constraints.txt
	$(PYTHON) -m venv $(ALLENSDK_VENV)
	$(ALLENSDK_VENV)/bin/pip install $(PIP_FLAGS) -r envs/allensdk-requirements.txt -c envs/allensdk-constraints.txt
	touch $@

setup: $(VENV)/.installed $(ALLENSDK_VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores 2

test: $(VENV)/.installed $(ALLENSDK_VENV)/.installed
	bash profiles/slurm/localcluster.sh start || [ "$$CI" != "true" ]
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests workflow benchmarks
	$(VENV)/bin/ruff format --check src tests workflow benchmarks
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests workflow benchmarks
	$(VENV)/bin/snakefmt Snakefile workflow
