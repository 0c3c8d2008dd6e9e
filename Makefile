# Entry points (see README.md): `make demo`, `make test`; for real data `make setup` (both
# environments) and `make profile` (`snakemake --profile slurm` finds profiles/slurm).
PYTHON ?= python3.11
VENV ?= .venv
ALLENSDK_VENV ?= .venv-allensdk
PIP_FLAGS ?= -q --disable-pip-version-check

# the user's snakemake config folder, where `snakemake --profile NAME` looks
SNAKEMAKE_CONFIG ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake

.PHONY: demo test lint format setup profile browser clean-results

$(VENV)/.installed: envs/requirements.txt envs/constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r envs/requirements.txt -c envs/constraints.txt
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	@# compiles and caches umap's numba kernels (as pip compiles .pyc files): a first import
	@# takes ~20 s, then ~3 s
	$(VENV)/bin/python -c "import umap"
	touch $@

$(ALLENSDK_VENV)/.installed: envs/allensdk-requirements.txt envs/allensdk-constraints.txt
	$(PYTHON) -m venv $(ALLENSDK_VENV)
	$(ALLENSDK_VENV)/bin/pip install $(PIP_FLAGS) -r envs/allensdk-requirements.txt -c envs/allensdk-constraints.txt
	touch $@

setup: $(VENV)/.installed $(ALLENSDK_VENV)/.installed

profile:
	mkdir -p "$(SNAKEMAKE_CONFIG)"
	@if [ -e "$(SNAKEMAKE_CONFIG)/slurm" ] && [ ! -L "$(SNAKEMAKE_CONFIG)/slurm" ]; then \
		echo "$(SNAKEMAKE_CONFIG)/slurm exists and is not a link: move it away first" >&2; exit 1; fi
	ln -sfn "$(CURDIR)/profiles/slurm" "$(SNAKEMAKE_CONFIG)/slurm"
	@echo "snakemake --profile slurm now uses $(CURDIR)/profiles/slurm"

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores 2

# headless Chromium for the report test (Debian's package; skipped when already there)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| { echo "the report test needs chromium: apt-get install chromium" >&2; [ "$$CI" != "true" ]; }

test: $(VENV)/.installed $(ALLENSDK_VENV)/.installed browser
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
