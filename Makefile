# The two commands of README: `make app` and `make test`. Both start with `make setup`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (pip takes it from this machine's disk); a CUDA torch already in the venv is kept.
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8501
export HF_HUB_OFFLINE ?= 1

.PHONY: setup app test test-fast lint chromium demo zoo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium fonts-dejavu-core; }

demo: setup
	$(BIN)/sae-core demo

# The server starts at once; the demo builds in a background process (resumed when interrupted)
# whose progress the home page shows live.
app: setup
	$(BIN)/sae-core demo --background
	$(BIN)/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# The layers and import rules of pyproject.toml's [tool.importlinter] (DESIGN.md section 2).
lint: setup
	$(BIN)/lint-imports

test: setup chromium lint
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow and not e2e"

zoo: setup
	$(BIN)/sae-core zoo build

bench: setup
	$(BIN)/python bench/harvest_throughput.py

clean:
	rm -rf $(VENV) workspace test-artifacts
