"""The dashboard (/ui/, docs/dashboard.md) in a real browser: headless Chromium driven over
the Chrome DevTools protocol (ws4py's client, already a dependency), against a real zsupd
and gateway. Chromium is Debian's `chromium` package; never downloaded by the tests. Without
it the browser tests are skipped locally and fail under CI=true (.ci/run installs it).
Screenshots go to tests/artifacts/ (ignored by git)."""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest
from conftest import ROOT, kill_tree, wait_for
from test_http_support import GW, echo_job, gw, start_gateway  # noqa: F401
from ws4py.client.threadedclient import WebSocketClient

ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900", "--remote-debugging-port=0"]
# Prints "tick N" five times a second, forever.
TICKER = "import time\nn = 0\nwhile True:\n    n += 1\n    print(f'tick {n}', flush=True)\n    time.sleep(0.2)\n"


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no chromium: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return path


class _DevTools(WebSocketClient):
    """One CDP connection: call(method, **params) -> result; the page's uncaught errors and
    console errors are kept in `errors` (shown when a test fails)."""

    def __init__(self, url):
        super().__init__(url, exclude_headers=["origin"])  # Chromium refuses foreign origins
        self.answers = {}
        self.lock = threading.Condition()
        self.next_id = 0
        self.errors = []

    def received_message(self, message):
        data = json.loads(message.data.decode("utf-8") if isinstance(message.data, bytes) else message.data)
        if data.get("method") == "Runtime.exceptionThrown":
            self.errors.append(data["params"]["exceptionDetails"].get("exception", {}).get("description"))
        elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in data["params"]["args"]))
        if "id" in data:
            with self.lock:
                self.answers[data["id"]] = data
                self.lock.notify_all()

    def call(self, method, timeout=20, **params):
        with self.lock:
            self.next_id += 1
            ident = self.next_id
        self.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        with self.lock:
            while ident not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.terminated:
                    raise AssertionError(f"no answer from Chromium to {method}")
                self.lock.wait(min(left, 0.5))
            answer = self.answers.pop(ident)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]


class Browser:
    """Headless Chromium with one page, in a new empty profile."""

    def __init__(self, path):
        self.profile = tempfile.mkdtemp(prefix="zsup-chromium-")
        self.proc = subprocess.Popen([path, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        wait_for(lambda: os.path.exists(port_file) and open(port_file).read().count("\n") >= 1,
                 timeout=30, interval=0.05, message="Chromium's DevTools port")
        port = int(open(port_file).read().split("\n")[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.cdp = _DevTools(page["webSocketDebuggerUrl"])
        self.cdp.daemon = True
        self.cdp.connect()

    def goto(self, url):
        self.cdp.call("Page.enable")
        self.cdp.call("Runtime.enable")
        self.cdp.call("Page.navigate", url=url)

    def js(self, expression):
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.cdp.call("Runtime.evaluate", expression=expression, returnByValue=True,
                               awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self, selector):
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || null")

    def click(self, selector):
        assert self.js(f"(el => el ? (el.click(), true) : false)(document.querySelector({json.dumps(selector)}))"), \
            f"nothing to click at {selector}"

    def screenshot(self, path):
        data = self.cdp.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.cdp.close()
        except Exception:
            pass
        kids = []
        try:
            import psutil
            kids = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        kill_tree(kids)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser(need_chromium())
    try:
        yield b
    finally:
        b.close()


def ticker_job(name="tick", **extra):
    return {"name": name, "cmd": sys.executable, "args": ["-u", "-c", TICKER], **extra}


def card(name):
    return f'article.job[data-job="{name}"]'
