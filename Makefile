# imageclf: two commands for a fresh machine.
#   make demo   installs, trains the default recipe on the bundled chest X-rays, evaluates, predicts
#   make test   installs (with dev extras, and Chromium for the browser test) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := demo_out

.PHONY: install demo test lint clean chromium

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# Byte-compiled as a regular install is: with PYTHONDONTWRITEBYTECODE set, an editable
	# install's modules would be compiled afresh by every command (60 ms of imageclf predict).
	$(BIN)/python -m compileall -q imageclf bench > /dev/null
	touch $@

demo: install
	$(BIN)/imageclf train samples/pneumoniamnist_trainval.npz --recipe xray-5block \
		--img-size 96 --epochs 6 --out $(DEMO)/xray --force
	$(BIN)/imageclf evaluate $(DEMO)/xray samples/pneumoniamnist_trainval.npz --split val \
		--json $(DEMO)/xray/evaluation.json
	$(BIN)/imageclf predict $(DEMO)/xray samples/xrays --csv $(DEMO)/predictions.csv

chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
		echo "warning: could not install Chromium; the browser test will be skipped"

test: install chromium
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check imageclf bench

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
