# Set-up, demo and tests. `make demo` and `make test` work on a fresh clone: they create .venv,
# install the package with its dev tools, and (where apt exists) the Fashion-MNIST Debian package;
# `make test` also installs Chromium, in which a test renders the explain report.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo

.PHONY: venv demo test clean

venv: $(STAMP)

# Redone only when pyproject.toml changes (or .venv is gone).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --disable-pip-version-check -e '.[dev]'  # modules compile on first import
	@if ! ls $(FMNIST_DIR)/t10k-images-idx3-ubyte* >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "installing dataset-fashion-mnist with apt-get"; \
		{ $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y dataset-fashion-mnist; } \
			|| echo "warning: could not install dataset-fashion-mnist; tests that need it are skipped" >&2; \
	fi
	@touch $@

# The explain report's test renders it in headless Chromium (it is skipped where Chromium is absent).
$(VENV)/.chromium: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		echo "installing chromium with apt-get"; \
		{ $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium; } \
			|| echo "warning: could not install chromium; the report rendering test is skipped" >&2; \
	fi
	@touch $@

demo: venv
	$(BIN)/agnostic-saliency map --model fmnist-cnn --target all --judge fmnist-mlp --overwrite --out $(DEMO_OUT)

test: venv $(VENV)/.chromium
	$(BIN)/ruff check src tests benchmarks scripts examples testbed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site
	$(BIN)/pytest -n 2 --dist loadgroup --durations=10  # one worker per core; Ray's tests share one worker

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
