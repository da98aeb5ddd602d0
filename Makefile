# One entry point. `make repro` reproduces the study; `make test` is what CI runs.
PROFILE ?= cpu
STUDY   ?=
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTHON  ?= python3.11
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench lab lock clean-venv

# Creates .venv and installs the pinned dependencies; redone only when the lock changes.
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# Switch to PROFILE and STUDY (rewrites params.yaml; STUDY empty: params `study`, `all`: every
# study) and bring every stage of its runs up to date.
repro: setup
	$(BIN)/python -m daug profile $(PROFILE) $(if $(STUDY),--study $(STUDY))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks

lab: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab

lock: setup
	$(BIN)/pip install --quiet -r requirements.in
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock.new
	@echo "review requirements.lock.new (keep the header), then move it over requirements.lock"

clean-venv:
	rm -rf $(VENV)
