# Everything runs from a private virtualenv so that a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE_DIR ?= $(CURDIR)/.run

.PHONY: venv run test lint bench soak clean stop

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check zsup tests scripts

run: $(STAMP)
	@echo "zsupd is starting with etc/zsup.ini (state, sockets and logs in $(STATE_DIR)):"
	@echo "  bus (commands)   ipc://$(STATE_DIR)/zsupd.sock"
	@echo "  bus (events)     ipc://$(STATE_DIR)/zsupd-pub.sock"
	@echo "  HTTP gateway     http://127.0.0.1:5000/      (curl http://127.0.0.1:5000/jobs)"
	@echo "  control          ZSUP_STATE_DIR=$(STATE_DIR) $(VENV)/bin/zsupctl status"
	@echo "  logs             $(STATE_DIR)/logs/"
	@echo "Ctrl-C stops zsupd and everything it runs."
	$(VENV)/bin/zsupd -c etc/zsup.ini --state-dir $(STATE_DIR) -v

bench: $(STAMP)
	$(PY) scripts/bench.py

# The chaos soak for minutes (a 35 s run of it is part of `make test`). Parameters by
# environment: ZSUP_SOAK_SECONDS (300), ZSUP_SOAK_SEED (12), ZSUP_SOAK_ACTIONS (4 per spell).
soak: $(STAMP)
	$(PY) scripts/soak.py

clean:
	rm -rf $(VENV) .run build *.egg-info
