# Everything runs from a private virtualenv so that a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE_DIR ?= $(CURDIR)/.run

.PHONY: venv gaffer-venv sockjs-client browser-deps etcd-server docs-tools run test lint bench soak clean stop install-service

# gaffer 0.5.2's own client and CLI (Python 2.7), for tests/test_gaffer_client.py. virtualenv
# 20.21 is the last that makes Python 2.7 environments. PY27: pyenv's 2.7 (its shim only works
# where pyenv selects 2.7), else a python2.7 on PATH.
PY27 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/2.7*/bin/python2.7) $(shell command -v python2.7 2>/dev/null))
GAFFER_VENV ?= .venv-gaffer
GAFFER_STAMP := $(GAFFER_VENV)/.installed

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py zsup/core/_spawn.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

gaffer-venv: $(GAFFER_STAMP)

$(GAFFER_STAMP): $(STAMP)
	@test -n "$(PY27)" || { echo "no python2.7 (set PY27=/path/to/python2.7)"; exit 1; }
	$(PY) -m pip install -q 'virtualenv>=20.21,<20.22'
	$(VENV)/bin/virtualenv -q -p $(PY27) $(GAFFER_VENV)
	$(GAFFER_VENV)/bin/python -m pip install -q gaffer==0.5.2 tornado==2.4.1 pyuv==0.10.13 psutil==0.7.1
	$(GAFFER_VENV)/bin/python -c 'import gaffer.httpclient, gaffer.cli.main'
	touch $(GAFFER_STAMP)

# SockJS's browser client for tests/test_gaffer_sockjs.py: the npm package, installed from the
# npm registry into a cache folder (not vendored), and Debian's chromium to run it headless.
SOCKJS_VERSION ?= 1.6.1
SOCKJS_DIR ?= .cache/sockjs
SOCKJS_STAMP := $(SOCKJS_DIR)/node_modules/sockjs-client/dist/sockjs.min.js

sockjs-client: $(SOCKJS_STAMP)

$(SOCKJS_STAMP):
	@command -v npm >/dev/null || { echo "no npm (apt-get install npm)"; exit 1; }
	mkdir -p $(SOCKJS_DIR)
	npm install --no-audit --no-fund --prefix $(SOCKJS_DIR) sockjs-client@$(SOCKJS_VERSION)

browser-deps:
	@command -v chromium >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The fleet tests (tests/test_fleet*.py) start a real etcd: Debian's etcd-server.
etcd-server:
	@command -v etcd >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server; }

# Three workers, a test file each at a time: most tests wait on real processes and sockets, so
# this takes the suite from ~10 to ~4 minutes on 2 cores. TEST_ARGS= runs it in one process.
TEST_ARGS ?= -n 3 --dist loadfile
# The docs' examples (tests/test_docs_examples.py) use curl, jq and openssl.
docs-tools:
	@for t in curl jq openssl; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	test -z "$$missing" || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }

test: $(STAMP) $(GAFFER_STAMP) $(SOCKJS_STAMP) browser-deps etcd-server docs-tools
	$(PY) -m pytest -q $(TEST_ARGS) tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zsup tests scripts

run: $(STAMP)
	@echo "zsupd is starting with etc/zsup.ini (state, sockets and logs in $(STATE_DIR)):"
	@echo "  bus (commands)   ipc://$(STATE_DIR)/zsupd.sock"
	@echo "  bus (events)     ipc://$(STATE_DIR)/zsupd-pub.sock"
	@echo "  HTTP gateway     http://127.0.0.1:5000/      (curl http://127.0.0.1:5000/jobs)"
	@echo "  control          ZSUP_STATE_DIR=$(STATE_DIR) $(VENV)/bin/zsupctl status"
	@echo "  logs             $(STATE_DIR)/logs/"
	@echo "Ctrl-C (or make stop, from another terminal) stops zsupd and everything it runs."
	@mkdir -p -m 700 $(STATE_DIR)
	$(VENV)/bin/zsupd -c etc/zsup.ini --state-dir $(STATE_DIR) --pidfile $(STATE_DIR)/zsupd.pid

# The pid of the zsupd that `make run` started, if it still runs: its pidfile, and a process
# of that pid that is a zsupd (a stale pidfile's pid may belong to anything by now).
run_pid = pid=$$(cat $(1)/zsupd.pid 2>/dev/null); \
	case "$$(ps -o args= -p "$$pid" 2>/dev/null)" in *zsupd*) ;; *) pid=;; esac

# Stops the zsupd that `make run` started (SIGTERM: its jobs get their graceful stop, up to
# their graceful_timeout) and waits until it is gone.
stop:
	@$(call run_pid,$(STATE_DIR)); \
	if [ -z "$$pid" ]; then echo "no zsupd from make run is running ($(STATE_DIR)/zsupd.pid)"; exit 0; fi; \
	kill -TERM $$pid && echo "zsupd (pid $$pid) is stopping"; \
	alive() { case "$$(ps -o stat= -p $$pid 2>/dev/null)" in ""|Z*) return 1;; esac; }; \
	n=0; while alive && [ $$n -lt 600 ]; do sleep 0.1; n=$$((n + 1)); done; \
	if alive; then echo "zsupd (pid $$pid) is still stopping after 60 s"; exit 1; fi; \
	echo "zsupd stopped"

# etc/zsupd.service, its ExecStart pointing at ZSUPD (default: this checkout's virtualenv),
# into UNIT_DIR; an empty /etc/zsup/zsup.ini is made if there is none (docs/systemd.md).
# DESTDIR stages the files elsewhere (packaging, tests) and skips systemctl.
ZSUPD ?= $(abspath $(VENV))/bin/zsupd
UNIT_DIR ?= /etc/systemd/system
ZSUP_CONFIG ?= /etc/zsup/zsup.ini

install-service:
	@test -x "$(ZSUPD)" || { echo "no zsupd at $(ZSUPD): run 'make venv' or set ZSUPD=/path/to/zsupd"; exit 1; }
	install -d "$(DESTDIR)$(UNIT_DIR)" "$(dir $(DESTDIR)$(ZSUP_CONFIG))"
	sed -e 's|/usr/local/bin/zsupd|$(ZSUPD)|' -e 's|/etc/zsup/zsup.ini|$(ZSUP_CONFIG)|' \
		etc/zsupd.service > "$(DESTDIR)$(UNIT_DIR)/zsupd.service"
	test -e "$(DESTDIR)$(ZSUP_CONFIG)" || printf '[zsup]\n# docs/config.md; jobs go in [process:NAME] sections\n' \
		> "$(DESTDIR)$(ZSUP_CONFIG)"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
		echo "installed: systemctl enable --now zsupd"; fi

bench: $(STAMP)
	$(PY) scripts/bench.py

# The chaos soak for minutes (a 35 s run of it is part of `make test`). Parameters by
# environment: ZSUP_SOAK_SECONDS (300), ZSUP_SOAK_SEED (12), ZSUP_SOAK_ACTIONS (4 per spell).
soak: $(STAMP)
	$(PY) scripts/soak.py

# Also forgets run-time state: .run, make run's state dir (what was loaded, scaled or unloaded
# at run time, which the next make run would bring back; logs; tasks). Refused while that
# zsupd runs. A STATE_DIR given elsewhere is left alone.
clean:
	@$(call run_pid,$(CURDIR)/.run); \
	if [ -n "$$pid" ]; then echo "zsupd (pid $$pid) from make run is running: make stop first"; exit 1; fi
	rm -rf $(VENV) $(GAFFER_VENV) $(SOCKJS_DIR) build *.egg-info
	rm -rf .run
	@echo "removed the virtualenvs and .run: run-time state is forgotten (jobs loaded, scaled or unloaded"
	@echo "at run time, logs, tasks); the next make run starts from etc/zsup.ini alone"
