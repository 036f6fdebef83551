# The two commands of README.md: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The embedded media server `make run` starts when KMS_URL is not set.
MEDIA_PORT ?= 8888
# The production-topology pass of `make test` (PostgreSQL + channels-redis on this machine).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=
# The official Kurento JavaScript client, for the media server's conformance tests.
KURENTO_CLIENT := tests/kurento_client

.PHONY: run test lint i18n-check translations pytest pytest-topology system-deps js-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# mediaserver/_fanout.c and _receive.c: the editable install builds them (an edit must rebuild
# them).
$(VENV)/.installed: pyproject.toml mediaserver/_fanout.c mediaserver/_receive.c | $(BIN)/python
	$(BIN)/pip install --quiet --editable .
	@touch $@

$(VENV)/.installed-test: pyproject.toml mediaserver/_fanout.c mediaserver/_receive.c | $(BIN)/python
	$(BIN)/pip install --quiet --editable '.[test]'
	@touch $@ $(VENV)/.installed

## make run: a fresh machine to a running product at http://$(HOST):$(PORT)/ (Ctrl-C stops it),
## with the embedded media server on 127.0.0.1:$(MEDIA_PORT), or the one at KMS_URL when set.
## DEBUG stays off (people get the product's error pages); `DEBUG=true make run` is for development.
## A run without DEBUG needs a secret key: made once, kept in $(SECRET_KEY_FILE) (ignored by git).
## Plain http on this machine needs no HTTPS redirect, no secure-only cookies and no HSTS.
## Variables already in the environment win over these.
SECRET_KEY_FILE ?= .secret_key
run: $(VENV)/.installed
	@set -e; \
	if [ -z "$$SECRET_KEY" ] && [ ! -s "$(SECRET_KEY_FILE)" ]; then \
		(umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > "$(SECRET_KEY_FILE)"); \
	fi; \
	export DEBUG="$${DEBUG:-false}" \
		SECRET_KEY="$${SECRET_KEY:-$$(cat "$(SECRET_KEY_FILE)")}" \
		ALLOWED_HOSTS="$${ALLOWED_HOSTS:-$(HOST),127.0.0.1,localhost}" \
		SECURE_SSL_REDIRECT="$${SECURE_SSL_REDIRECT:-false}" \
		SESSION_COOKIE_SECURE="$${SESSION_COOKIE_SECURE:-false}" \
		CSRF_COOKIE_SECURE="$${CSRF_COOKIE_SECURE:-false}" \
		SECURE_HSTS_SECONDS="$${SECURE_HSTS_SECONDS:-0}"; \
	$(BIN)/python manage.py compile_translations --verbosity 0; \
	$(BIN)/python manage.py migrate --noinput; \
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0; \
	echo; $(BIN)/python manage.py ensure_admin --url "http://$(HOST):$(PORT)"; \
	exec $(BIN)/python -m conference.devserver --host $(HOST) --port $(PORT) --media-port $(MEDIA_PORT)

## make test: install what tests need, lint, then the whole suite on both topologies.
test: $(VENV)/.installed-test system-deps js-deps lint i18n-check pytest pytest-topology

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run --settings tests.settings

# Every string marked for translation has a finished Korean translation, in both catalogs
# (django: templates and Python; djangojs: static/js). Needs GNU gettext (system-deps); without
# it this is skipped with a notice, and fails under CI=true.
i18n-check: $(VENV)/.installed-test
	$(BIN)/python manage.py check_translations --settings tests.settings

# The .mo files next to the catalogs (pure Python: no gettext needed). git ignores them.
translations: $(VENV)/.installed
	@$(BIN)/python manage.py compile_translations --verbosity 0 --settings tests.settings

# pytest exits 5 when it collected nothing: for this project that is a failure, said plainly.
define run_pytest
	status=0; $(BIN)/python -m pytest $(1) $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests for: $(1)" >&2; fi; \
	exit $$status
endef

# The whole suite runs on the native fan-out send path (built by the editable install); the
# media server's forwarding tests run again on the Python path it falls back to without a
# compiler (MEDIASERVER_NATIVE=0): both must forward the same.
FALLBACK_TESTS := tests/mediaserver/test_forwarding.py tests/mediaserver/test_rtp_send.py \
	tests/mediaserver/test_fanout.py tests/mediaserver/test_hubs.py \
	tests/mediaserver/test_sender_reports.py
pytest: $(VENV)/.installed-test translations
	@$(call run_pytest,)
	@echo "== the media server's Python send path (MEDIASERVER_NATIVE=0) =="
	@export MEDIASERVER_NATIVE=0; $(call run_pytest,$(FALLBACK_TESTS))

# The tests marked `topology` again, on PostgreSQL and Redis. Outside CI a machine without them
# skips this pass with a notice; under CI=true it runs and fails.
pytest-topology: $(VENV)/.installed-test translations
	@if [ -z "$$CI" ] && ! $(BIN)/python -c "import socket; [socket.create_connection(a, 1).close() for a in (('127.0.0.1', 5432), ('127.0.0.1', 6379))]" 2>/dev/null; then \
		echo "NOTICE: PostgreSQL or Redis not reachable on 127.0.0.1; skipping the production-topology pass."; \
	else \
		echo "== production topology: PostgreSQL + channels-redis =="; \
		export DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" \
			CHANNEL_LAYER_PREFIX="conference-test-$$$$" CONFERENCE_TOPOLOGY=production; \
		$(call run_pytest,-m topology); \
	fi

# Debian packages the real-component tests use: Chromium (browser tests), coturn (TURN tests),
# iptables (fault tests drop the media server's packets on loopback), gettext (xgettext and
# msgmerge for `make i18n-check`), fonts-noto-cjk (Korean text in Chromium's pages), libzbar0
# (the media server's ZBarFilter reads codes with it; without it creating one is refused).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v turnserver >/dev/null || missing="$$missing coturn"; \
	command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v xgettext >/dev/null || missing="$$missing gettext"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	dpkg -s libzbar0 >/dev/null 2>&1 || missing="$$missing libzbar0"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "NOTICE: missing Debian packages:$$missing (install them as root; their tests skip, or fail under CI)"; \
		fi; \
	fi

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .test-db.sqlite3* $(KURENTO_CLIENT)/node_modules

# npm kurento-client 7.3.0 installs with its git dependency pinned through package.json
# "overrides" and without install scripts (the one it names is not shipped).
js-deps: $(KURENTO_CLIENT)/node_modules/.package-lock.json

$(KURENTO_CLIENT)/node_modules/.package-lock.json: $(KURENTO_CLIENT)/package.json $(KURENTO_CLIENT)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(KURENTO_CLIENT) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else \
		echo "NOTICE: npm is missing; the kurento-client conformance tests skip (fail under CI)"; \
	fi
