# ItemGate — `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ITEMGATE_DATA_DIR ?= var

.PHONY: run test test-unit bench lint fuzz loadtest browser-deps screenshots clean translations

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Web translations: gettext catalogs (Chinese source, English in the .po). The .mo is build output, compiled here;
# `make translations` extracts new texts into the template and merges them into the .po for translators.
LOCALES := api/translations
PO := $(LOCALES)/en/LC_MESSAGES/messages.po
MO := $(LOCALES)/en/LC_MESSAGES/messages.mo

$(MO): $(PO) | $(STAMP)
	$(VENV)/bin/pybabel compile -d $(LOCALES) -D messages --statistics

translations: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ --no-location --sort-output -o $(LOCALES)/messages.pot api
	ITEMGATE_SECRET_KEY=extract $(PY) scripts/translations.py
	$(VENV)/bin/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) -D messages --no-fuzzy-matching
	$(MAKE) $(MO)

SECRET := $(ITEMGATE_DATA_DIR)/secret.key
HOST ?= 127.0.0.1
PORT ?= 8000

$(SECRET):
	@mkdir -p $(ITEMGATE_DATA_DIR)
	@$(PY) -c "import secrets; print(secrets.token_hex(32))" > $(SECRET)
	@chmod 600 $(SECRET)

# The server is exec'ed: make's child is `itemgate serve` itself, so a SIGTERM to make (which make passes on to
# its child) or a Ctrl+C stops gunicorn and the embedded S3 server, and nothing is left running.
run: $(STAMP) $(SECRET) $(MO)
	ITEMGATE_SECRET_KEY=$$(cat $(SECRET)) $(VENV)/bin/itemgate db upgrade
	ITEMGATE_SECRET_KEY=$$(cat $(SECRET)) $(VENV)/bin/itemgate demo
	exec env ITEMGATE_SECRET_KEY=$$(cat $(SECRET)) $(VENV)/bin/itemgate serve --host $(HOST) --port $(PORT)

browser-deps:
	@bash scripts/ensure-chromium.sh

test: $(STAMP) $(MO) browser-deps
	$(VENV)/bin/pytest -n 2

# The fast tests: no database or S3 server, no browser (tests/conftest.py marks them `unit`).
test-unit: $(STAMP)
	$(VENV)/bin/pytest -m unit -q -p no:xdist

# One screenshot per role (1366×768, demo data) into tests/screenshots/roles/ (git-ignored); README links them.
screenshots: $(STAMP) browser-deps
	$(VENV)/bin/pytest tests/browser/test_role_pages.py tests/browser/test_admin_flow.py -p no:xdist -q
	@ls tests/screenshots/roles/

bench: $(STAMP)
	$(PY) -m bench.run

fuzz: $(STAMP)
	ITEMGATE_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest tests/test_fuzz_api.py

# 50 users for 5 minutes against gunicorn (4 workers) on PostgreSQL; not part of `make test`.
loadtest: $(STAMP)
	$(PY) scripts/loadtest.py

# mypy checks the files pyproject.toml names: engine storage api forms.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf var .pytest_cache
