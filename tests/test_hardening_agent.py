"""Agent setups cannot be held by a trickling server, flooded, or fill the disk.

A real zsupd, the agent API served by the gateway's HTTP server, and real local HTTP servers
on 127.0.0.1: one serving archives, one that trickles a byte now and then."""

import http.server as httpserver
import json
import os
import tarfile
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest
from conftest import wait_for
from test_agent import Files, Gateway, add, app_files, http, status_of, wait_state


class Trickle(httpserver.BaseHTTPRequestHandler):
    """`/body`: a head promising 1 MB, then one byte every 0.1 s; `/head`: the head itself,
    one header line every 0.1 s. Either way, forever, until the client goes away."""

    protocol_version = "HTTP/1.0"

    def do_GET(self):
        server = self.server
        with server.lock:
            server.active += 1
            server.seen += 1
        try:
            if self.path.startswith("/head"):
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                piece = b"X-Slow: yes\r\n"
            else:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                piece = b"x"
            while not server.stopping.wait(0.1):
                self.wfile.write(piece)
                self.wfile.flush()
        except OSError:
            pass  # the client went away: what the test waits for
        finally:
            with server.lock:
                server.active -= 1

    def log_message(self, *args):
        pass


class TrickleServer:
    def __init__(self):
        self.httpd = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.active = self.httpd.seen = 0
        self.httpd.stopping = threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def active(self):
        return self.httpd.active

    def stop(self):
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


CONFIG = ("[zsup]\nagent_download_deadline = 3\nagent_max_setups = 1\nagent_max_queued = 1\n"
          "agent_disk_budget = 350K\nagent_max_unpacked = 1M\n")


@pytest.fixture
def agent(tmp_path, zsupd_factory):
    zsupd = zsupd_factory(CONFIG)
    www = tmp_path / "www"
    www.mkdir()
    files, trickle, gw = Files(www), TrickleServer(), Gateway(zsupd)
    try:
        yield zsupd, gw, files, www, trickle
    finally:
        gw.stop()
        trickle.stop()
        files.stop()


def create(gw, node, url):
    return http("POST", f"{gw.root}/create-process",
                {"app": "hard", "node": node, "process_type": "web", "source_url": url})


def test_a_trickling_server_cannot_hold_a_setup(agent):
    zsupd, gw, files, www, trickle = agent
    threads = psutil.Process(zsupd.proc.pid).num_threads()
    for path in ("/body", "/head"):
        code, doc = create(gw, path[1:], trickle.url + path)
        assert code == 201, doc
        began = time.monotonic()
        failed = wait_state(gw, doc, ("failed",), timeout=15)
        assert "not finished within 3 s" in failed["reason"], failed
        assert time.monotonic() - began < 10
        # the connection was let go: the server's handler saw the client leave
        wait_for(lambda: trickle.active == 0, timeout=10, message="the trickling connection to close")
        assert http("POST", doc["delete"], {})[0] == 200
    assert trickle.httpd.seen == 2
    wait_for(lambda: psutil.Process(zsupd.proc.pid).num_threads() <= threads, timeout=10,
             message="zsupd's setup threads to end")


def test_setups_at_once_are_capped(agent):
    zsupd, gw, files, www, trickle = agent
    code, first = create(gw, "a", trickle.url + "/body")
    assert code == 201
    wait_state(gw, first, ("downloading",))
    code, second = create(gw, "b", trickle.url + "/body")
    assert code == 201 and second["state"] == "pending"
    req = urllib.request.Request(f"{gw.root}/create-process", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"app": "hard", "node": "c", "process_type": "web",
                                                  "source_url": trickle.url + "/body"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=15)
    assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "5"
    assert json.loads(refused.value.read())["error"]["code"] == "unavailable"
    assert http("GET", f"{gw.root}/process-status/hard.c")[0] == 404  # nothing recorded
    # "downloading" is said before the first request reaches the server's handler thread
    wait_for(lambda: trickle.httpd.seen >= 1, timeout=10, message="the first download to reach the server")
    assert trickle.httpd.seen == 1  # the second waits, it does not download
    assert status_of(gw, second)["state"] == "pending"
    # a queued setup can be deleted, which makes room
    assert http("POST", second["delete"], {})[0] == 200
    code, third = create(gw, "c", trickle.url + "/body")
    assert code == 201
    # once the first ends (its deadline), the queued one starts
    assert wait_state(gw, first, ("failed",))["reason"].startswith("download: not finished")
    wait_state(gw, third, ("downloading", "failed"))
    assert wait_state(gw, third, ("failed",))["reason"].startswith("download: not finished")
    assert trickle.httpd.seen == 2


def du(path):
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


def test_disk_budget_across_apps(agent):
    zsupd, gw, files, www, trickle = agent
    with tarfile.open(www / "app.tar", "w") as tf:  # not compressed: 100 KB on disk twice
        for name, data in {**app_files(), "blob.bin": os.urandom(100_000)}.items():
            add(tf, name, data)
    url = f"{files.url}/app.tar"
    root = os.path.join(zsupd.state_dir, "agent")
    docs = []
    for node in ("one", "two"):
        code, doc = create(gw, node, url)
        assert code == 201
        wait_state(gw, doc, ("running",), timeout=30)
        docs.append(doc)
    assert du(root) < 350 * 1024
    # a third app would pass 350K while being downloaded and unpacked
    code, third = create(gw, "three", url)
    assert code == 201
    failed = wait_state(gw, third, ("failed",), timeout=30)
    assert "disk budget" in failed["reason"] and "agent_disk_budget" in failed["reason"], failed
    assert du(root) < 350 * 1024
    assert not os.path.exists(os.path.join(root, "hard.three", "app"))
    # deleting an app gives its bytes back
    assert http("POST", docs[0]["delete"], {})[0] == 200
    assert http("POST", third["delete"], {})[0] == 200
    code, third = create(gw, "three", url)
    assert code == 201
    wait_state(gw, third, ("running",), timeout=30)
    assert du(root) < 350 * 1024
