"""Helpers for the gateway tests (test_http_*.py): a real zsupd plus an in-process gateway."""

import http.client
import json
import os
import sys

import pytest
from conftest import ROOT, wait_for

ECHO = os.path.join(ROOT, "etc", "echo.py")
# Prints "line N" every 20 ms, forever.
TICKER = "import time\nn = 0\nwhile True:\n    n += 1\n    print(f'line {n}', flush=True)\n    time.sleep(0.02)\n"


def echo_job(name="echo", **extra):
    return {"name": name, "cmd": sys.executable, "args": [ECHO], "redirect_input": True, **extra}


def ticker_job(name="ticker", **extra):
    return {"name": name, "cmd": sys.executable, "args": ["-u", "-c", TICKER], **extra}


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.body = status, body
        self.headers = http.client.HTTPMessage()
        for name, value in headers:
            self.headers[name] = value

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class GW:
    """A running gateway: `gw.request(method, path, body)` -> Answer (body JSON-encoded
    unless bytes/str), on a fresh connection each time."""

    def __init__(self, daemon, gateway, tmp_path):
        self.d, self.g, self.tmp_path = daemon, gateway, tmp_path
        address = gateway.addresses[0]
        self.host, self.port = address.host, address.port
        self.base = f"http://{self.host}:{self.port}"

    def connection(self, timeout=10):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Answer(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def load(self, job, session="default"):
        a = self.post(f"/jobs/{session}", job)
        assert a.status == 201, a
        return a.json

    def pid_of(self, name, count=1):
        return wait_for(lambda: (lambda p: p if len(p) >= count else None)(
            self.get(f"/processes/{name}/_pids").json["pids"]), message=f"pids of {name}")


def start_gateway(daemon, tmp_path, endpoints=None, **kw):
    from zsup.cli.http_gateway import Gateway

    # Every client of these tests is 127.0.0.1, and some open hundreds of streams: the
    # per-client cap (64 by default) is tested in test_http_abuse.py.
    endpoints = endpoints or [{"name": "t", "bind": "127.0.0.1:0", "max_client_connections": 1024}]
    gateway = Gateway(daemon.bus, daemon.pub, endpoints,
                      plugin_dir=str(tmp_path / "plugins"), **kw)
    gateway.start()
    return gateway


@pytest.fixture
def gw(zsupd_factory, tmp_path):
    daemon = zsupd_factory("")
    gateway = start_gateway(daemon, tmp_path, timeout=3.0)
    try:
        yield GW(daemon, gateway, tmp_path)
    finally:
        gateway.stop()


def read_until(resp, predicate, limit=1 << 20):
    """Read a streaming http.client response line by line until predicate(text so far)."""
    text = b""
    while not predicate(text):
        line = resp.readline()
        if not line:
            break
        text += line
        assert len(text) < limit
    return text


class LineReader:
    """Reads a streaming response's lines in a background thread, so a test can wait for
    what came with a deadline (and keep triggering events meanwhile) instead of blocking."""

    def __init__(self, resp):
        import threading

        self.resp = resp
        self._lock = threading.Lock()
        self._text = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                with self._lock:
                    self._text += line
        except Exception:  # closed under us, or timed out: the waits below fail with the text
            return

    @property
    def text(self):
        with self._lock:
            return self._text

    def wait(self, predicate, timeout):
        """True once predicate(text so far) holds, False after `timeout` seconds."""
        try:
            wait_for(lambda: predicate(self.text), timeout=timeout, interval=0.01)
            return True
        except AssertionError:
            return False


def sse_blocks(text):
    """The complete blocks of an SSE text, each as {field: value} (the last value wins)."""
    blocks = []
    for block in text.decode().split("\n\n")[:-1]:
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields[key] = value
        blocks.append(fields)
    return blocks


def until_job_event(gw, reader, predicate, job=None, timeout=30):
    """The slow joiner: a new subscription misses what is published before it reaches zsupd.
    Load (and unload) a job again and again until predicate(reader's text) holds."""
    job = job or echo_job()

    def seen():
        a = gw.post("/jobs/default", job)
        assert a.status == 201, a
        if reader.wait(predicate, timeout=1.0):
            return True
        a = gw.request("DELETE", f"/jobs/default/{job['name']}")
        assert a.status == 200, a
        return False

    try:
        wait_for(seen, timeout=timeout, interval=0.01, message="the job's event on the stream")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the stream had {reader.text[-500:]!r}") from None
