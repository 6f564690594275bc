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
        wait_for(lambda: self.js("location.href.startsWith('http') && document.readyState === 'complete'"),
                 timeout=15, interval=0.05, message=f"the page {url}")

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


@pytest.fixture
def auth_gw(zsupd_factory, tmp_path):
    """A gateway that wants a password (alice:s3cret) or a token (tok-dash)."""
    from zsup.http.auth import hash_password

    passwords, tokens = tmp_path / "users", tmp_path / "tokens"
    passwords.write_text(f"alice:{hash_password('s3cret')}\n")
    tokens.write_text("tok-dash\n")
    passwords.chmod(0o600)
    tokens.chmod(0o600)
    daemon = zsupd_factory("")
    gateway = start_gateway(daemon, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "auth_file": str(passwords), "tokens_file": str(tokens)}])
    try:
        yield GW(daemon, gateway, tmp_path)
    finally:
        gateway.stop()


# -- the files, over plain HTTP (no browser needed) -------------------------------------------

def test_ui_files_are_served_without_auth_but_the_api_is_not(auth_gw):
    a = auth_gw.get("/ui")
    assert a.status == 301 and a.headers["Location"].endswith("/ui/")
    page = auth_gw.get("/ui/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="app.js">' in page.body
    assert page.headers["Cache-Control"] == "no-cache"
    for name in ("app.js", "api.js", "dom.js", "jobs.js", "logview.js", "spark.js"):
        js = auth_gw.get(f"/ui/{name}")
        assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript"), name
    assert auth_gw.get("/ui/style.css").headers["Content-Type"].startswith("text/css")
    assert auth_gw.request("HEAD", "/ui/app.js").status == 200
    # the API behind it still wants credentials
    assert auth_gw.get("/jobs").status == 401
    assert auth_gw.get("/jobs", headers={"Authorization": "Bearer tok-dash"}).status == 200


def test_ui_refuses_what_is_not_one_of_its_files(gw):
    for path in ("/ui/nope.js", "/ui/%2e%2e/web.py", "/ui/..%2fweb.py", "/ui/../app.py", "/ui/ui_routes.py",
                 "/ui//etc/passwd", "/ui/app.js/x"):
        a = gw.get(path)
        assert a.status in (404, 400), (path, a)
        assert a.json["error"]["code"] in ("not_found", "bad_request"), (path, a)
    a = gw.post("/ui/app.js", b"x")
    assert a.status == 405 and a.headers["Allow"] == "GET, HEAD"
    assert gw.get("/").json["links"]["dashboard"].endswith("/ui/")
    assert gw.get("/jobs").status == 200  # nothing else changed


# -- in the browser ------------------------------------------------------------------------------

def test_dashboard_live_in_chromium(browser, gw):
    gw.load(ticker_job(), session="demo")
    gw.load(echo_job(), session="demo")
    browser.goto(f"{gw.base}/ui/")
    try:
        _live_checks(gw, browser)
    finally:
        browser.screenshot(os.path.join(ARTIFACTS, "dashboard.png"))
    assert browser.cdp.errors == []


def _live_checks(gw, browser):
    tick, echo = card("demo.tick"), card("demo.echo")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=15,
             message=f"demo.tick running on the page (errors: {browser.cdp.errors})")
    assert browser.text('section.session[data-session="demo"] h2') == "demo"
    assert browser.text("#conn") == "live"

    # stopped through the bus: the page follows from the events alone
    gw.d.call("stop_job", name="tick", session="demo")
    # "stopped" may show for a moment before the exit event: wait for the exit itself
    wait_for(lambda: browser.text(f"{tick} .state") == "exited (sig 15)", timeout=10,
             message=f"demo.tick stopped on the page, got {browser.text(f'{tick} .state')!r}")
    gw.d.call("start_job", name="tick", session="demo")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=10, message="running again")

    # the scale buttons
    browser.click(f"{tick} .scale-up")
    wait_for(lambda: browser.text(f"{tick} .count") == "2", timeout=10, message="scaled to 2 on the page")
    wait_for(lambda: len(gw.d.call("pids", name="demo.tick")) == 2, timeout=10, message="2 processes")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 2/2", timeout=10, message="running 2/2")
    assert browser.js(f"document.querySelectorAll('{tick} tr.proc').length") == 2
    browser.click(f"{tick} .scale-down")
    wait_for(lambda: len(gw.d.call("pids", name="demo.tick")) == 1, timeout=10, message="1 process")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=10, message="back to 1/1")

    # a rolling restart from the page: a new process replaces the old one
    old = gw.d.call("pids", name="demo.tick")
    browser.click(f"{tick} .roll")
    wait_for(lambda: (p := gw.d.call("pids", name="demo.tick")) and len(p) == 1 and p != old, timeout=15,
             message="a new process after the rolling restart")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=10, message="1/1 after the roll")

    # a job with a ready check: starting until its process passed it, then ready
    gw.d.call("load", config={"name": "slow", "cmd": "sleep", "args": ["60"], "ready": "delay:1.5"},
              session="demo")
    slow = card("demo.slow")
    wait_for(lambda: (browser.text(f"{slow} .state") or "").startswith("starting 0/1 ready"), timeout=10,
             message=f"demo.slow starting on the page, got {browser.text(f'{slow} .state')!r}")
    wait_for(lambda: browser.text(f"{slow} .state") == "ready 1/1", timeout=10, message="demo.slow ready")

    # sparklines fill from the stats topic
    wait_for(lambda: browser.js(f"document.querySelector('{tick} .spark.mem polyline').getAttribute('points')"),
             timeout=10, message="a memory sparkline")
    wait_for(lambda: browser.text(f"{tick} tr.proc .spark.mem .value").endswith("iB"), timeout=10,
             message="a process's memory")

    # the log view: a line written now shows within a second (asserted generously: 5 s)
    browser.click(f"{echo} header ~ .actions .logs")
    wait_for(lambda: browser.js("!!document.querySelector('#detail .log')"), message="the log view")
    pid = gw.pid_of("demo.echo")[0]
    sent = time.monotonic()
    assert gw.post(f"/streams/{pid}/stdin", b"marker-one\n").status == 200
    line = f'#detail .line[data-pid="{pid}"][data-label="stdout"]'
    wait_for(lambda: browser.js(f"[...document.querySelectorAll('{line}')].some(l => "
                                f"l.textContent.includes('marker-one'))"), timeout=5, message="the line in the log")
    assert time.monotonic() - sent < 5
    assert browser.text(f"{line} .lseq") == "1" and browser.text(f"{line} .llabel") == "stdout"

    # the console writes to stdin over /wstreams/<pid>; the echo comes back
    browser.js(f"(s => {{ s.value = '{pid}'; s.dispatchEvent(new Event('change')); }})"
               f"(document.querySelector('#detail .pid-filter'))")
    wait_for(lambda: browser.js("!!document.querySelector('#detail .console-input')"), message="the console")
    wait_for(lambda: browser.js("document.querySelector('#detail .console-box').dataset.state === 'open'"),
             message="the console's websocket")
    browser.js("document.querySelector('#detail .console-input').value = 'from-console'")
    browser.js("document.querySelector('#detail form.console').requestSubmit()")
    wait_for(lambda: "from-console" in (browser.text("#detail .console-output .console-line") or ""),
             timeout=5, message="the console's echo")

    # the text filter hides other lines
    browser.js("(f => { f.value = 'marker'; f.dispatchEvent(new Event('input')); })"
               "(document.querySelector('#detail .text-filter'))")
    assert browser.js("[...document.querySelectorAll('#detail .line')].filter(l => !l.hidden)"
                      ".every(l => l.textContent.includes('marker'))")


def _log_in(browser, **fields):
    wait_for(lambda: browser.js("!document.getElementById('login').hidden"), timeout=15,
             message=f"the login form (errors: {browser.cdp.errors})")
    for name, value in fields.items():
        browser.js(f"document.querySelector('#login [name={name}]').value = {json.dumps(value)}")
    browser.js("document.getElementById('login').requestSubmit()")


@pytest.mark.parametrize("how", ["token", "url", "password"])
def test_dashboard_logs_in_and_goes_live(browser, auth_gw, how):
    """Basic (the login form's user and password) or a token (typed, or in the page's URL):
    REST, the events and the log view all use it; a wrong password is said so, and nothing
    shows."""
    auth = {"Authorization": "Bearer tok-dash"}
    assert auth_gw.post("/jobs/demo", ticker_job(), headers=auth).status == 201
    browser.goto(f"{auth_gw.base}/ui/" + ("?access_token=tok-dash" if how == "url" else ""))
    if how == "token":
        _log_in(browser, token="tok-dash")
    elif how == "password":
        _log_in(browser, user="alice", password="wrong")
        wait_for(lambda: "refused" in (browser.text("#login .form-error") or ""), timeout=15,
                 message="the refusal")
        assert "401" in browser.text("#login .form-error")
        assert browser.js("document.querySelectorAll('article.job').length") == 0
        _log_in(browser, user="alice", password="s3cret")
    tick = card("demo.tick")
    wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=15,
             message=f"the job after logging in (errors: {browser.cdp.errors})")
    wait_for(lambda: browser.text("#conn") == "live", timeout=10, message="the events websocket")
    auth_gw.d.call("stop_job", name="tick", session="demo")
    wait_for(lambda: "exited" in browser.text(f"{tick} .state"), timeout=10, message="the stop, live")
    assert not browser.js("document.getElementById('logout').hidden")

    # the console of a process: stdin in, its stdout back (with a password: POST stdin and
    # the log view's events, as no websocket can carry the password)
    assert auth_gw.post("/jobs/demo", echo_job(), headers=auth).status == 201
    echo = card("demo.echo")
    wait_for(lambda: browser.js(f"!!document.querySelector('{echo} .console')"), timeout=10, message="echo's row")
    browser.click(f"{echo} .console")
    wait_for(lambda: browser.js("!!document.querySelector('#detail .console-input')"), message="the console")
    wait_for(lambda: browser.js("document.querySelector('#detail .log-status').dataset.state === 'open' && "
                                "document.querySelector('#detail .console-box').dataset.state === 'open'"),
             message="the log view and console connected")
    browser.js("document.querySelector('#detail .console-input').value = 'hello-" + how + "'")
    browser.js("document.querySelector('#detail form.console').requestSubmit()")
    wait_for(lambda: f"hello-{how}" in (browser.text("#detail .console-output .console-line") or ""),
             timeout=5, message=f"the console's echo (errors: {browser.cdp.errors})")
    assert browser.js("location.search") == ""  # no credentials in the address bar


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_survives_gateway_and_zsupd_restarts(browser, zsupd_factory, tmp_path):
    """The page says it is disconnected, reconnects by itself, and reads everything again."""
    daemon = zsupd_factory("")
    port = _free_port()
    endpoints = [{"name": "t", "bind": f"127.0.0.1:{port}"}]
    gateway = start_gateway(daemon, tmp_path, endpoints=endpoints, timeout=3.0)
    try:
        g = GW(daemon, gateway, tmp_path)
        g.load(ticker_job(), session="demo")
        browser.goto(f"{g.base}/ui/")
        tick = card("demo.tick")
        wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=15, message="the job")

        gateway.stop()
        wait_for(lambda: (browser.text("#conn") or "").startswith("disconnected"), timeout=10,
                 message="the page noticing the gateway is gone")
        daemon.call("stop_job", name="tick", session="demo")  # while nobody was listening
        gateway = start_gateway(daemon, tmp_path, endpoints=endpoints, timeout=3.0)
        wait_for(lambda: browser.text("#conn") == "live", timeout=15, message="reconnected")
        wait_for(lambda: "exited" in browser.text(f"{tick} .state") or browser.text(f"{tick} .state") == "stopped",
                 timeout=10, message="the change made while disconnected")

        # zsupd restarts under the same gateway: the jobs come back (from its state database)
        daemon.call("start_job", name="tick", session="demo")
        old_pid = g.pid_of("demo.tick")[0]
        daemon.stop()
        daemon.start()
        new_pid = wait_for(lambda: [p for p in daemon.call("pids", name="demo.tick") if p != old_pid],
                           timeout=15, message="the job back in the new zsupd")[0]
        wait_for(lambda: browser.js(f"!!document.querySelector('{tick} tr.proc[data-pid=\"{new_pid}\"]')"),
                 timeout=15, message=f"process {new_pid} on the page (errors: {browser.cdp.errors})")
        wait_for(lambda: browser.text(f"{tick} .state") == "running 1/1", timeout=10, message="running again")
    finally:
        gateway.stop()


def test_dashboard_forms_and_errors(browser, gw):
    """Loading a job from the JSON form (and its errors), signal, unload with a confirm, and an
    API error shown as the gateway's own message."""
    browser.goto(f"{gw.base}/ui/")
    wait_for(lambda: browser.text("#conn") == "live", timeout=15, message="the page")
    wait_for(lambda: not browser.js("document.getElementById('empty').hidden"), timeout=10, message="'no job'")

    form = "#load-dialog form"
    browser.click("#load-open")
    browser.js(f"document.querySelector('{form} [name=job]').value = '{{\"name\": '")
    browser.js(f"document.querySelector('{form}').requestSubmit()")
    assert "not valid JSON" in browser.text(f"{form} .form-error")
    job = json.dumps(ticker_job("made"))
    browser.js(f"document.querySelector('{form} [name=job]').value = {json.dumps(job)}")
    browser.js(f"document.querySelector('{form} [name=session]').value = 'web'")
    browser.js(f"document.querySelector('{form}').requestSubmit()")
    made = card("web.made")
    wait_for(lambda: browser.text(f"{made} .state") == "running 1/1", timeout=10, message="the loaded job")
    assert not browser.js("document.getElementById('load-dialog').open")
    assert gw.d.call("info", name="web.made")["running"] == 1
    # the same again: the gateway's 409 message, in the form
    browser.click("#load-open")
    browser.js(f"document.querySelector('{form}').requestSubmit()")
    wait_for(lambda: browser.text(f"{form} .form-error"), timeout=10, message="the conflict")
    assert browser.text(f"{form} .form-error").startswith("409: ")
    browser.js("document.getElementById('load-dialog').close()")

    # a signal: SIGSTOP then SIGCONT through the job's select and button
    import psutil

    os_pid = gw.d.call("info", name="web.made")["processes"][0]["os_pid"]
    for sig, status in (("STOP", psutil.STATUS_STOPPED), ("CONT", None)):
        browser.js(f"(s => {{ s.value = '{sig}'; s.dispatchEvent(new Event('change')); }})"
                   f"(document.querySelector('{made} select.signal'))")
        browser.click(f"{made} .actions .send-signal")
        wait_for(lambda: (psutil.Process(os_pid).status() == status) if status else
                 psutil.Process(os_pid).status() != psutil.STATUS_STOPPED, timeout=10, message=f"SIG{sig}")

    # an error from the API, as its message: stopping a process that is gone
    browser.js("window.__confirm = window.confirm; window.confirm = () => false")
    browser.click(f"{made} .unload")  # refused in the confirm: nothing happens
    assert gw.d.call("info", name="web.made")["active"]
    browser.js("window.confirm = () => true")
    browser.click(f"{made} .unload")
    wait_for(lambda: not browser.js(f"!!document.querySelector('{made}')"), timeout=10, message="unloaded")
    assert "web.made" not in gw.d.call("jobs")
    browser.js("import('./api.js').then(api => api.post('/jobs/web/nope/state', 'start'))"
               ".catch(e => import('./dom.js').then(d => d.showError('start web.nope: ' + e.message)))")
    wait_for(lambda: "404: " in (browser.text("#errors .error") or ""), timeout=5, message="the error")
    assert "no job" in browser.text("#errors .error")


def test_dashboard_log_view_older_lines_pause_and_filters(browser, gw):
    """The log view starts with the ring's last lines, reads older ones when scrolled to the
    top, and keeps new lines aside while paused."""
    burst = "import time\nfor n in range(1, 351):\n    print(f'burst {n}', flush=True)\n" + TICKER
    gw.load({"name": "burst", "cmd": sys.executable, "args": ["-u", "-c", burst]}, session="demo")
    pid = gw.pid_of("demo.burst")[0]
    wait_for(lambda: gw.d.call("read_output", pid=pid, since=349)["lines"], message="the burst written")
    browser.goto(f"{gw.base}/ui/")
    burst_card = card("demo.burst")
    wait_for(lambda: browser.text(f"{burst_card} .state") == "running 1/1", timeout=15, message="the job")
    browser.click(f"{burst_card} header ~ .actions .logs")

    def seqs():
        return browser.js("[...document.querySelectorAll('#detail .line')].map(l => Number(l.dataset.seq))")

    first = wait_for(lambda: (lambda s: s if s and min(s) <= 351 else None)(seqs()), timeout=10,
                     message="the first lines from the ring")
    assert min(first) > 200, "only the last 100 lines or so at first"
    assert browser.js("[...document.querySelectorAll('#detail .line')].every(l => "
                      "l.querySelector('.llabel').textContent === 'stdout')")
    wait_for(lambda: browser.js("document.querySelector('#detail .log').dataset.loaded === 'true'"),
             message="the ring's lines read")
    first = seqs()
    browser.js("document.querySelector('#detail .log').scrollTop = 0")
    wait_for(lambda: min(seqs()) < min(first) - 150, timeout=10, message="older lines after scrolling up")
    browser.js("document.querySelector('#detail .log').scrollTop = 0")
    wait_for(lambda: min(seqs()) == 1, timeout=10, message="the oldest line in the ring")
    assert browser.text('#detail .line[data-seq="1"] .ltext') == "burst 1"
    got = seqs()
    assert len(got) == len(set(got)), "no line twice"

    browser.click("#detail .pause")
    shown = len(seqs())
    wait_for(lambda: "new)" in browser.text("#detail .pause"), timeout=10, message="lines waiting")
    assert len(seqs()) == shown
    browser.click("#detail .pause")
    wait_for(lambda: len(seqs()) > shown, timeout=10, message="the waiting lines shown")
    assert browser.text("#detail .pause") == "pause"

    browser.js("(s => { s.value = 'stderr'; s.dispatchEvent(new Event('change')); })"
               "(document.querySelector('#detail .label-filter'))")
    assert browser.js("[...document.querySelectorAll('#detail .line')].every(l => l.hidden)")
