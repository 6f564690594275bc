"""Gateway websockets, authentication, TLS, unix sockets and the zsup-http command."""

import base64
import http.client
import json
import os
import queue
import re
import signal
import ssl
import subprocess
from urllib.parse import quote

import pytest
from conftest import PYTHON, ROOT, UnixHTTPConnection, close_ws_clients, readline_within, wait_for
from test_http_support import GW, Answer, echo_job, gw, read_until, sse_blocks, start_gateway, ticker_job  # noqa: F401
from ws4py.client.threadedclient import WebSocketClient
from ws4py.exc import HandshakeError

from zsup.http.auth import Authenticator, hash_password, verify_password


class WS(WebSocketClient):
    def __init__(self, url, **kw):
        super().__init__(url, **kw)
        self.messages = queue.Queue()
        self.closed_with = None

    def received_message(self, message):
        self.messages.put(message.data)

    def closed(self, code, reason=None):
        self.closed_with = code

    def next(self, timeout=10.0):
        return self.messages.get(timeout=timeout)


@pytest.fixture
def ws_clients():
    made = []

    def make(url, **kw):
        ws = WS(url, **kw)
        try:
            ws.connect()
        except BaseException:
            ws.close_connection()
            raise
        made.append(ws)
        return ws

    try:
        yield make
    finally:
        close_ws_clients(made)


def test_wstreams_echo_and_errors(gw, ws_clients):
    gw.load(echo_job())
    pid = gw.pid_of("echo")[0]
    ws = ws_clients(f"ws://{gw.host}:{gw.port}/wstreams/{pid}")
    ws.send("ECHO\n")  # the seed's echo client
    assert ws.next() == b"ECHO\n"
    ws.send(b"binary\n", binary=True)
    assert ws.next() == b"binary\n"
    # lines written over HTTP come back on the websocket too
    gw.post(f"/streams/{pid}/stdin", b"from http\n")
    assert ws.next() == b"from http\n"
    # the process exits: the websocket closes normally
    gw.request("DELETE", f"/processes/{pid}")
    wait_for(lambda: ws.terminated, message="websocket closed on exit")
    assert ws.closed_with == 1000

    # a process without stdin: each frame is answered with a JSON error
    gw.load(ticker_job())
    tpid = gw.pid_of("ticker")[0]
    ws = ws_clients(f"ws://{gw.host}:{gw.port}/wstreams/{tpid}?label=stderr")
    ws.send("hello\n")
    err = json.loads(ws.next())
    assert err["error"]["code"] == "conflict" and "stdin" in err["error"]["message"]

    # unknown or exited processes, unknown paths: no websocket (404 before the upgrade)
    for path in ("/wstreams/999999", f"/wstreams/{pid}", "/nowhere", f"/wstreams/{tpid}?label=x"):
        with pytest.raises(HandshakeError):
            ws_clients(f"ws://{gw.host}:{gw.port}{path}")


def test_channel_websocket_streams_events(gw, ws_clients):
    ws = ws_clients(f"ws://{gw.host}:{gw.port}/channel?pattern=job.default.echo")
    ws2 = ws_clients(f"ws://{gw.host}:{gw.port}/channel/job.default.")
    # the slow joiner: a load may come before a subscription; load and unload the job again
    # until each websocket has had an event (only job echo matches the first one's pattern)
    first = {}

    def created():
        gw.post("/jobs/default", echo_job())
        gw.request("DELETE", "/jobs/default/echo")
        for key, sock in (("ws", ws), ("ws2", ws2)):
            if key not in first:
                try:
                    first[key] = json.loads(sock.next(timeout=0.2))
                except queue.Empty:
                    pass
        return len(first) == 2

    wait_for(created, message="a job event on both channels")
    assert first["ws"]["topic"].startswith("job.default.echo.")
    assert first["ws2"]["topic"].startswith("job.default.")


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_auth_passwords_and_tokens(zsupd_factory, tmp_path, ws_clients):
    assert verify_password("s3cret", hash_password("s3cret"))
    assert verify_password("s3cret", hash_password("s3cret", "pbkdf2_sha256"))
    assert not verify_password("wrong", hash_password("s3cret"))
    passwords = tmp_path / "users"
    passwords.write_text(f"# users\nalice:{hash_password('s3cret')}\n")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-123\n")
    passwords.chmod(0o600)  # credential files others can read are refused
    tokens.chmod(0o600)
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "auth_file": str(passwords), "tokens_file": str(tokens)}])
    try:
        g = GW(d, gateway, tmp_path)
        a = g.get("/ping")
        assert a.status == 401 and a.json["error"]["code"] == "forbidden"
        assert "Basic" in a.headers["WWW-Authenticate"]
        assert g.get("/ping", headers={"Authorization": _basic("alice", "wrong")}).status == 401
        assert g.get("/ping", headers={"Authorization": _basic("bob", "s3cret")}).status == 401
        assert g.get("/ping", headers={"Authorization": "Bearer tok-999"}).status == 401
        assert g.get("/ping", headers={"Authorization": "Basic !!"}).status == 401
        assert g.get("/ping", headers={"Authorization": _basic("alice", "s3cret")}).status == 200
        assert g.get("/ping", headers={"Authorization": "Bearer tok-123"}).status == 200
        assert g.get("/_plugin/x/", headers={}).status == 401
        # preflight needs no credentials
        assert g.request("OPTIONS", "/jobs").status == 204
        # websockets are guarded too
        url = f"ws://{g.host}:{g.port}/channel"
        with pytest.raises(HandshakeError):
            ws_clients(url)
        with pytest.raises(HandshakeError):
            ws_clients(url, headers=[("Authorization", "Bearer nope")])
        assert not ws_clients(url, headers=[("Authorization", "Bearer tok-123")]).terminated
        # tokens are re-read when the file changes
        tokens.write_text("tok-456\n")
        os.utime(tokens, ns=(1, 1))
        assert g.get("/ping", headers={"Authorization": "Bearer tok-456"}).status == 200
        assert g.get("/ping", headers={"Authorization": "Bearer tok-123"}).status == 401
    finally:
        gateway.stop()
    # a configured file that cannot be read lets nobody in
    assert not Authenticator(str(tmp_path / "missing")).check(_basic("alice", "s3cret"))


def test_access_token_query_parameter(zsupd_factory, tmp_path, ws_clients, caplog):
    """Browsers cannot set headers on EventSource or WebSocket: ?access_token=TOKEN works too
    (a bearer token only, never a password), and never reaches the routes or the logs."""
    passwords = tmp_path / "users"
    passwords.write_text(f"alice:{hash_password('s3cret')}\n")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-123\ntok+/=&x\n")
    passwords.chmod(0o600)  # credential files others can read are refused
    tokens.chmod(0o600)
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "auth_file": str(passwords), "tokens_file": str(tokens)}])
    try:
        g = GW(d, gateway, tmp_path)
        bearer = {"Authorization": "Bearer tok-123"}
        caplog.set_level("DEBUG")
        assert g.get("/ping?access_token=tok-123").status == 200
        assert g.get("/ping?access_token=tok%2B%2F%3D%26x").status == 200  # URL-encoded
        for bad in ("tok-999", "", "s3cret", "alice:s3cret", _basic("alice", "s3cret"),
                    _basic("alice", "s3cret").split()[1], "Bearer tok-123"):
            a = g.get(f"/ping?access_token={quote(bad, safe='')}")
            assert a.status == 401 and a.json["error"]["code"] == "forbidden", bad
        # two values are refused, even when one of them is good
        assert g.get("/ping?access_token=tok-999&access_token=tok-123").status == 401
        # the header still works, and a good header with a bad query token too
        assert g.get("/ping?access_token=nope", headers=bearer).status == 200

        assert g.post("/jobs/default?access_token=tok-123", echo_job()).status == 201  # any route
        pid = wait_for(lambda: g.get("/processes/default.echo/_pids", headers=bearer).json["pids"])[0]
        g.post(f"/streams/{pid}/stdin", b"hello\n", headers=bearer)
        wait_for(lambda: g.get(f"/streams/{pid}/stdout", headers=bearer).body == b"hello\n")

        # an EventSource-style GET (no header at all), the token among other parameters
        conn = g.connection()
        conn.request("GET", f"/streams/{pid}/stdout?feed=eventsource&access_token=tok-123&since=0")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        text = read_until(resp, lambda t: b"data: " in t and t.endswith(b"\n\n"))
        assert [b["data"] for b in sse_blocks(text) if "data" in b] == ["hello"]
        conn.close()
        assert g.get(f"/streams/{pid}/stdout?feed=eventsource&access_token=bad").status == 401
        assert g.get(f"/streams/{pid}/stdout?feed=eventsource&access_token=s3cret").status == 401
        conn = g.connection()
        conn.request("GET", "/watch?feed=eventsource&heartbeat=0.05&access_token=tok-123")
        resp = conn.getresponse()
        assert resp.status == 200 and read_until(resp, lambda t: b": heartbeat" in t)
        conn.close()
        # other parameters still reach the route (an unknown feed is still a 400)
        assert g.get(f"/streams/{pid}/stdout?access_token=tok-123&feed=nope").status == 400

        # websockets: ?access_token= on the upgrade request
        base = f"ws://{g.host}:{g.port}"
        ws = ws_clients(f"{base}/wstreams/{pid}?access_token=tok-123")
        ws.send("ECHO\n")
        assert ws.next() == b"ECHO\n"
        # other parameters still reach the websocket route
        assert not ws_clients(f"{base}/channel?access_token=tok-123&pattern=job.").terminated
        for bad in ("nope", "s3cret", quote(_basic("alice", "s3cret"), safe="")):
            with pytest.raises(HandshakeError) as refused:
                ws_clients(f"{base}/channel?access_token={bad}")
            assert "401" in str(refused.value), bad
        with pytest.raises(HandshakeError):
            ws_clients(f"{base}/wstreams/{pid}?access_token=s3cret")

        # the token never shows in the gateway's logs
        assert "tok-123" not in caplog.text and "s3cret" not in caplog.text
    finally:
        gateway.stop()


def test_access_token_is_taken_out_of_the_environ():
    from zsup.http.auth import split_access_token, strip_access_token

    assert split_access_token("") == ([], "")
    assert split_access_token("feed=x&since=2") == ([], "feed=x&since=2")
    assert split_access_token("a=%20b&access_token=t%2Bk&c") == (["t+k"], "a=%20b&c")
    assert split_access_token("access%5Ftoken=x") == (["x"], "")
    environ = {"QUERY_STRING": "feed=eventsource&access_token=tok",
               "REQUEST_URI": "/streams/1/stdout?feed=eventsource&access_token=tok"}
    assert strip_access_token(environ) == ["tok"]
    assert environ == {"QUERY_STRING": "feed=eventsource",
                       "REQUEST_URI": "/streams/1/stdout?feed=eventsource"}
    environ = {"QUERY_STRING": "access_token=tok", "REQUEST_URI": "/watch?access_token=tok"}
    assert strip_access_token(environ) == ["tok"]
    assert environ == {"QUERY_STRING": "", "REQUEST_URI": "/watch"}
    # a password-only gateway takes no access_token at all; no auth at all lets anybody in
    passwords_only = Authenticator(auth_file="/nonexistent", tokens_file=None)
    assert not passwords_only.check_request(None, ["anything"])
    assert Authenticator().check_request(None, [])


def test_tls_and_unix_endpoints(zsupd_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    sock_path = str(tmp_path / "gw.sock")
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "tls", "bind": "127.0.0.1:0", "certfile": str(cert), "keyfile": str(key)},
        {"name": "unix", "bind": f"unix:{sock_path}", "backlog": 16}])
    try:
        tls_addr = gateway.addresses[0]
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection(tls_addr.host, tls_addr.port, context=context, timeout=10)
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b'{"ok": true}\n'
        conn.close()
        plain = http.client.HTTPConnection(tls_addr.host, tls_addr.port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/ping")
            plain.getresponse()
        plain.close()
        conn = UnixHTTPConnection(sock_path)
        conn.request("GET", "/sessions")
        assert conn.getresponse().read() == b'{"sessions": []}\n'
        conn.close()
        assert oct(os.stat(sock_path).st_mode & 0o777) == "0o600"
    finally:
        gateway.stop()
    assert not os.path.exists(sock_path)


def test_cli_with_config_and_sigterm(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    sock_path = str(tmp_path / "cli.sock")
    config = tmp_path / "gw.ini"
    config.write_text(f"[zsup]\nhttp_endpoints = main\nstate_dir = {d.state_dir}\n\n"
                      f"[endpoint:main]\nbind = unix:{sock_path}\nbacklog = 8\n\n"
                      f"[endpoint:unused]\nbind = 127.0.0.1:1\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("ZSUP_BUS", None)
    proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.http_gateway", "-c", str(config), "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        def answer():
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            try:
                conn = UnixHTTPConnection(sock_path, timeout=2)
                conn.request("GET", "/ping")
                return conn.getresponse().status == 200
            except OSError:
                return False
        wait_for(answer, timeout=20, interval=0.05, message="zsup-http to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not os.path.exists(sock_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    # --bind with port 0, --bus from the environment, SIGINT
    env["ZSUP_BUS"], env["ZSUP_PUB"] = d.bus, d.pub
    proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.http_gateway", "--bind", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = readline_within(proc.stderr, timeout=20, message="zsup-http's 'listening on' line").decode()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/version")
        assert json.loads(conn.getresponse().read())["zsupd"]["name"] == "zsupd"
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    bad = subprocess.run([PYTHON, "-m", "zsup.cli.http_gateway", "--bind", "nonsense"],
                         capture_output=True, env=env, timeout=30)
    assert bad.returncode != 0 and b"zsup-http: error:" in bad.stderr and b"Traceback" not in bad.stderr
    out = subprocess.run([PYTHON, "-m", "zsup.cli.http_gateway", "--hash-password", "alice"],
                         input=b"pw\n", capture_output=True, env=env, timeout=30)
    user, _, stored = out.stdout.decode().strip().partition(":")
    assert user == "alice" and verify_password("pw", stored)


def test_zsupd_starts_the_gateway(zsupd_factory, tmp_path):
    """zsupd runs `python -m zsup.cli.http_gateway` as its own job from http_endpoints."""
    sock_path = str(tmp_path / "d.sock")
    d = zsupd_factory(f"[zsup]\nhttp_endpoints = web\n\n[endpoint:web]\nbind = unix:{sock_path}\n")

    def answer():
        try:
            conn = UnixHTTPConnection(sock_path, timeout=2)
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        except OSError:
            return False
    wait_for(answer, timeout=20, interval=0.05, message="the gateway started by zsupd")
