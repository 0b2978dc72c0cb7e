# `make run`: set everything up and print the original study's report.
# `make matrix`: the same, on every runtime, backend and precision mode, as one table.
# `make test`: set everything up and run the tests.
# `make bench`: figures for every step at three model sizes (scripts/bench.py);
# `make bench-chain`: the steps on graphs of 1k to 100k nodes (scripts/bench_chain.py).
# Setup is idempotent: each step reruns only when what it depends on changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-installed
NPM_STAMP := node_modules/.npm-installed
ADDON_STAMP := node_modules/.tfjs-node-built

.PHONY: run matrix test bench bench-chain zoo setup setup-firefox setup-webkit setup-chromedriver chromium clean

# The four steps, overlapped (tfjs_parity/study.py): Node and Chromium start up, tfjs and
# their backend included, while step 1 builds the model, and read it once it is committed.
run: setup
	@$(PY) -m tfjs_parity.study

# Every runtime and backend, plus WebGL with float16 textures (a phone GPU), and Firefox's
# WebGL, WASM and CPU when Firefox is installed (make setup-firefox), in one table
# (results/report.html and .json too). Every run starts up beside step 1 and then runs in
# its turn, alone, so that each times its backends undisturbed (tfjs_parity/study.py).
matrix: setup
	@$(PY) -m tfjs_parity.study --matrix

# The tests run Firefox too (a second engine: WebGL on Mesa's llvmpipe, not SwiftShader),
# WebKit (Safari's engine, WebKitGTK) through its WebDriver, and chromedriver as a WebDriver
# endpoint (run_browser.py --webdriver).
test: setup setup-firefox setup-webkit setup-chromedriver
	$(PY) -m pytest tests

# Every step on the study, 10 x Dense(1000) and ResNet50: wall time, peak memory, capture
# sizes, compare against the study's JSON way, start-ups against make run. Figures, no pass/fail.
bench: setup
	$(PY) scripts/bench.py

# Step 1, Node's tensorflow backend and compare --full on graphs of 1k, 10k and 100k chained
# nodes: how each step grows with a graph's size (about 15 minutes). Figures, no pass/fail.
bench-chain: setup
	$(PY) scripts/bench_chain.py

# bubblewrap: the sandbox create_keras_model.py --model runs a user's model in (tfjs_parity/sandbox.py).
setup: $(VENV_STAMP) $(ADDON_STAMP) chromium
	@command -v bwrap >/dev/null || scripts/install_bwrap.sh

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

# A Chromium for run_browser.py: CHROME_PATH or one on PATH (the names runners/chromium.py
# looks for), else Debian's package.
chromium:
	@test -x "$${CHROME_PATH:-/nonexistent}" || for name in chromium chromium-browser google-chrome \
		google-chrome-stable; do command -v $$name >/dev/null && exit 0; done; scripts/install_chromium.sh

# Firefox ESR and a virtual display for `run_browser.py --browser firefox`: only when asked
# (make test asks), so the default setup stays quick.
setup-firefox:
	@scripts/install_debian.sh "Firefox runs" firefox-esr:firefox-esr Xvfb:xvfb

setup-webkit:
	@scripts/install_debian.sh "WebKit runs" WebKitWebDriver:webkit2gtk-driver Xvfb:xvfb strace:strace

setup-chromedriver: setup
	@scripts/install_debian.sh "the --webdriver tests" chromedriver:chromium-driver

clean:
	rm -rf results

# Trained tfjs models that npm packages ship (scripts/zoo_corpus.json, pinned by version and
# sha512), each through the four steps: a table of what was judged, where the rest stopped
# and why, mismatching points and seconds per step (docs/zoo.md). Figures, no pass/fail.
zoo: setup
	$(PY) scripts/zoo.py
