"""Headless Chromium driven over the DevTools protocol (a ws4py client), for tests that need
a real browser (test_gaffer_sockjs.py).

``chromium_or_skip()`` gives the binary, or skips with the reason, except under CI=true,
where a missing browser fails the test (CI installs it: .ci/run, Makefile ``browser-deps``).
"""

import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import urllib.request

import pytest
from conftest import wait_for
from ws4py.client.threadedclient import WebSocketClient

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-allow-origins=*", "--remote-debugging-port=0"]


def need(what: str, found, hint: str):
    """`found`, or skip (fail under CI=true) saying what is missing and how to get it."""
    if found:
        return found
    reason = f"{what} is missing ({hint})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + "; CI must have it")
    pytest.skip(reason)


def chromium_or_skip() -> str:
    return need("chromium", shutil.which("chromium") or shutil.which("chromium-browser"),
                "apt-get install chromium, or make browser-deps")


class _Client(WebSocketClient):
    def __init__(self, url):
        super().__init__(url)
        self.replies = queue.Queue()

    def received_message(self, message):
        self.replies.put(json.loads(message.data))


class Browser:
    """One headless Chromium with one page. ``evaluate(js)`` awaits a promise's value."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="zsup-chromium-")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.client = None
        self._ids = itertools.count(1)
        try:
            port_file = os.path.join(self.profile, "DevToolsActivePort")
            port = wait_for(lambda: os.path.exists(port_file) and
                            open(port_file).read().split("\n")[0].strip(),
                            timeout=30, message="chromium's DevTools port")
            pages = wait_for(lambda: [t for t in json.load(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/json/list", timeout=5)) if t["type"] == "page"],
                timeout=20, message="a page target")
            self.client = _Client(pages[0]["webSocketDebuggerUrl"])
            self.client.connect()
        except BaseException:
            self.close()
            raise

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        ident = next(self._ids)
        self.client.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = self.client.replies.get(timeout=timeout)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("document.readyState") == "complete", timeout=20,
                 message=f"{url} loaded")

    def evaluate(self, expression: str, timeout: float = 60.0):
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # chromium and all its helpers
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)
