# `make run`: set everything up and print the original study's report.
# `make matrix`: the same, on every runtime, backend and precision mode, as one table.
# `make test`: set everything up and run the tests.
# Setup is idempotent: each step reruns only when what it depends on changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed
NPM_STAMP := node_modules/.npm-installed
ADDON_STAMP := node_modules/.tfjs-node-built

.PHONY: run matrix test setup chromium clean

run: setup
	@$(PY) create_keras_model.py
	@$(PY) run_node.py
	@$(PY) run_browser.py
	@echo
	@$(PY) compare_outputs.py

# Every runtime and backend, plus WebGL with float16 textures (a phone GPU), in one table.
matrix: setup
	@$(PY) create_keras_model.py
	@$(PY) run_node.py --backend all
	@$(PY) run_browser.py --backend all
	@$(PY) run_browser.py --precision f16
	@echo
	@$(PY) compare_outputs.py --html results/report.html --json results/report.json

test: setup
	$(PY) -m pytest tests

setup: $(VENV_STAMP) $(ADDON_STAMP) chromium

$(VENV_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# Scripts off: tfjs-node's install script would download libtensorflow from a host that
# an offline machine cannot reach; scripts/build_tfjs_node.sh builds the addon instead.
$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

$(ADDON_STAMP): $(NPM_STAMP) $(VENV_STAMP) scripts/build_tfjs_node.sh
	scripts/build_tfjs_node.sh $(PY)
	@touch $@

# A Chromium for run_browser.py: CHROME_PATH or one on PATH, else Debian's package.
chromium: $(VENV_STAMP)
	@$(PY) -c "from tfjs_parity.runners.browser_runner import find_chromium; find_chromium()" 2>/dev/null \
		|| scripts/install_chromium.sh

clean:
	rm -rf results
