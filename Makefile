# The two set-up commands: `make run` (main job on the bundled default model) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= tiny-moe

.PHONY: run test lint docs results install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(VENV)/.docs: $(STAMP)
	$(BIN)/pip install --quiet -e ".[docs]"  # kaleido: the results page's PNG figures
	touch $(VENV)/.docs

run: $(STAMP)
	$(BIN)/workbench battery run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/python -m workbench.families.hook_points > docs/hook_points.md
	$(BIN)/python -m workbench.families.table > docs/families.md
	$(BIN)/python -m probes.catalogue > docs/probes/index.md

results: $(VENV)/.docs
	$(BIN)/workbench battery run docs/probes/results.toml --out runs/results
	BROWSER_PATH=/usr/bin/chromium $(BIN)/workbench battery page runs/results --figures docs/probes/figures \
		--link figures/ > docs/probes/results.md

clean:
	rm -rf $(VENV)
