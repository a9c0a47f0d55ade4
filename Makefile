# Two commands on a fresh machine: `make app` (install + start the app) and `make test` (install + whole suite).
PY ?= python3

.PHONY: install app test test-deps

install:
	$(PY) -m pip install -q -r requirements.txt -e .

app: install
	$(PY) app.py

test-deps:
	$(PY) -m pip install -q -r requirements-dev.txt -e .
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

test: test-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q
