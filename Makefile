# Everything runs from a private virtualenv so that a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE_DIR ?= $(CURDIR)/.run
HTTP ?= 127.0.0.1:5000

.PHONY: venv run test bench clean stop

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

run: $(STAMP)
	$(VENV)/bin/zsupd -c etc/zsup.ini --state-dir $(STATE_DIR) --bind $(HTTP)

bench: $(STAMP)
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) .run build *.egg-info
