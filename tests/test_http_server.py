"""The gateway's HTTP server layer: real sockets, real HTTP, TLS and websocket clients."""

import base64
import hashlib
import http.client
import json
import os
import queue
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import UnixHTTPConnection, close_ws_clients, wait_for
from ws4py.client.threadedclient import WebSocketClient
from ws4py.exc import HandshakeError
from ws4py.websocket import WebSocket

from zsup.http.server import BindAddress, Endpoint, HTTPServer, parse_bind

# --------------------------------------------------------------------------------------------
# The application under test: a WSGI app and two websocket classes


def hello_app(environ, start_response):
    if environ["PATH_INFO"] == "/scheme":
        body = environ["wsgi.url_scheme"].encode()
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class EchoWebSocket(WebSocket):
    def received_message(self, message):
        self.send(message.data, message.is_binary)


class WhoAmIWebSocket(WebSocket):
    """Says what the server told it about the request, as soon as it is open."""

    def opened(self):
        self.send(json.dumps({"path": self.path, "query": self.query_string,
                              "token": self.headers.get("x-token"),
                              "environ_path": self.environ["PATH_INFO"]}))


def routes(path, query_string, headers):
    return {"/echo": EchoWebSocket, "/whoami": WhoAmIWebSocket}.get(path)


# --------------------------------------------------------------------------------------------
# Fixtures and client helpers


@pytest.fixture
def serve():
    """Start servers; every one of them is stopped, even when the test fails."""
    started = []

    def _serve(endpoints=None, **kw):
        kw.setdefault("threads", 4)
        srv = HTTPServer(hello_app, endpoints or [Endpoint("test", "127.0.0.1:0")], routes, **kw)
        started.append(srv)
        srv.start()
        return srv

    try:
        yield _serve
    finally:
        for srv in started:
            srv.stop()


class Client(WebSocketClient):
    def __init__(self, url, **kw):
        super().__init__(url, **kw)
        self.messages = queue.Queue()

    def received_message(self, message):
        self.messages.put(message.data)

    def next_message(self, timeout=10.0):
        return self.messages.get(timeout=timeout)


@pytest.fixture
def clients():
    """Make websocket clients; every one is closed and its thread ended after the test."""
    made = []

    def _client(url, **kw):
        ws = Client(url, **kw)
        made.append(ws)
        ws.connect()
        return ws

    try:
        yield _client
    finally:
        close_ws_clients(made)


def get(conn, path="/", headers=None):
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def tcp(address, timeout=10):
    return http.client.HTTPConnection(address.host, address.port, timeout=timeout)


def upgrade_headers(**extra):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
               "Sec-WebSocket-Version": "13"}
    headers.update(extra)
    return headers


def ws_url(address, path="/echo", scheme="ws"):
    return f"{scheme}://{address.host}:{address.port}{path}"


def read_until(sock, marker, deadline_s=10.0, data=b""):
    """Read from a raw socket until marker is in the bytes, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; got {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data!r}")
        data += chunk
    return data


def masked_text_frame(text):
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def self_signed(folder) -> tuple[str, str]:
    """A self-signed EC certificate for localhost and its key (owner-only, as the gateway
    wants), made with the openssl command line in `folder`."""
    openssl = shutil.which("openssl")
    if openssl is None:  # make test and .ci/run install it
        if os.environ.get("CI") == "true":
            pytest.fail("the openssl command is missing; CI must have it")
        pytest.skip("openssl command not found")
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate made with the openssl command line."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def insecure_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def non_daemon_threads():
    return {t for t in threading.enumerate() if not t.daemon and t.is_alive()}


# --------------------------------------------------------------------------------------------
# Bind strings and endpoints


def test_parse_bind_forms():
    assert parse_bind() == BindAddress("127.0.0.1", 5000)
    assert parse_bind("0.0.0.0:5010") == BindAddress("0.0.0.0", 5010)
    assert parse_bind("localhost:80") == BindAddress("localhost", 80)
    assert parse_bind("8080") == BindAddress("127.0.0.1", 8080)
    assert parse_bind("[::1]:5000") == BindAddress("::1", 5000)
    assert parse_bind("unix:/run/zsup/http.sock") == BindAddress(path="/run/zsup/http.sock")
    assert str(parse_bind("[::1]:0")) == "[::1]:0"
    assert str(parse_bind("unix:/tmp/s")) == "unix:/tmp/s"


@pytest.mark.parametrize("bad", ["", "   ", "host", "::1:5000", "[::1]", "[nope]:1", ":5000",
                                 "host:port", "host:70000", "unix:", "unix:/" + "x" * 200,
                                 "bad host:1", "-1"])
def test_parse_bind_refuses_bad_values_with_one_line(bad):
    with pytest.raises(ValueError) as info:
        parse_bind(bad)
    assert "\n" not in str(info.value)


def test_endpoint_checks_its_values():
    with pytest.raises(ValueError, match="endpoint 'web'"):
        Endpoint("web", "nope")
    with pytest.raises(ValueError, match="backlog"):
        Endpoint("web", "127.0.0.1:0", backlog=0)
    with pytest.raises(ValueError, match="keyfile"):
        Endpoint("web", "127.0.0.1:0", keyfile="k.pem")
    assert Endpoint("web").address == BindAddress("127.0.0.1", 5000)


# --------------------------------------------------------------------------------------------
# Plain HTTP


def test_get_over_tcp_with_port_zero(serve):
    srv = serve()
    address = srv.addresses[0]
    assert address.host == "127.0.0.1" and address.port > 0
    status, headers, body = get(tcp(address))
    assert (status, body) == (200, b"hello")
    assert get(tcp(address), "/scheme")[2] == b"http"


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_get_over_ipv6(serve, clients):
    srv = serve([Endpoint("v6", "[::1]:0")])
    address = srv.addresses[0]
    assert address.host == "::1" and str(address) == f"[::1]:{address.port}"
    assert get(http.client.HTTPConnection("::1", address.port, timeout=10))[2] == b"hello"
    ws = clients(f"ws://[::1]:{address.port}/echo")
    ws.send("six")
    assert ws.next_message() == b"six"


def test_tcp_and_unix_endpoints_at_once(serve, tmp_path):
    path = str(tmp_path / "http.sock")
    srv = serve([Endpoint("tcp", "127.0.0.1:0"), Endpoint("local", f"unix:{path}", backlog=16)])
    tcp_address, unix_address = srv.addresses
    assert unix_address == BindAddress(path=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert get(tcp(tcp_address))[2] == b"hello"
    assert get(UnixHTTPConnection(path))[2] == b"hello"
    srv.stop()
    assert not os.path.exists(path)


def test_stale_unix_socket_is_replaced_and_live_one_refused(serve, tmp_path):
    path = str(tmp_path / "http.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays behind, nobody listens
    srv = serve([Endpoint("local", f"unix:{path}")])
    assert get(UnixHTTPConnection(path))[2] == b"hello"
    other = HTTPServer(hello_app, [Endpoint("again", f"unix:{path}")], routes)
    with pytest.raises(OSError, match="another server is listening"):
        other.start()
    other.stop()
    assert get(UnixHTTPConnection(path))[2] == b"hello"
    srv.stop()


def test_busy_port_fails_cleanly(serve):
    srv = serve()
    before = non_daemon_threads()
    other = HTTPServer(hello_app, [Endpoint("a", "127.0.0.1:0"),
                                   Endpoint("b", str(srv.addresses[0]))], routes)
    with pytest.raises(OSError, match="endpoint 'b' cannot listen"):
        other.start()
    other.stop()
    assert non_daemon_threads() == before
    assert get(tcp(srv.addresses[0]))[2] == b"hello"


# --------------------------------------------------------------------------------------------
# TLS


def test_tls_endpoint(serve, certificate):
    cert, key = certificate
    srv = serve([Endpoint("secure", "127.0.0.1:0", certfile=cert, keyfile=key)])
    address = srv.addresses[0]
    conn = http.client.HTTPSConnection(address.host, address.port, timeout=10,
                                       context=insecure_context())
    status, _, body = get(conn)
    assert (status, body) == (200, b"hello")
    conn = http.client.HTTPSConnection(address.host, address.port, timeout=10,
                                       context=insecure_context())
    assert get(conn, "/scheme")[2] == b"https"
    # Plain HTTP on the TLS port gets nowhere.
    with pytest.raises((http.client.HTTPException, OSError)):
        get(tcp(address))


def test_stalled_tls_handshakes_do_not_block_others(serve, certificate):
    cert, key = certificate
    srv = serve([Endpoint("secure", "127.0.0.1:0", certfile=cert, keyfile=key),
                 Endpoint("plain", "127.0.0.1:0")], tls_handshake_timeout=1.0)
    secure, plain = srv.addresses
    idle = [socket.create_connection((secure.host, secure.port), timeout=10) for _ in range(3)]
    try:
        assert get(tcp(plain))[2] == b"hello"
        conn = http.client.HTTPSConnection(secure.host, secure.port, timeout=10,
                                           context=insecure_context())
        assert get(conn)[2] == b"hello"
        # ...and the stalled ones are dropped once their handshake deadline passes.
        for sock in idle:
            sock.settimeout(10)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_websocket_over_tls(serve, clients, certificate):
    cert, key = certificate
    srv = serve([Endpoint("secure", "127.0.0.1:0", certfile=cert, keyfile=key)])
    ws = clients(ws_url(srv.addresses[0], scheme="wss"))
    for i in range(20):
        text = f"secure {i} " + "x" * (i * 500)
        ws.send(text)
        assert ws.next_message() == text.encode()


# --------------------------------------------------------------------------------------------
# Websockets on the HTTP port


def test_websocket_echo_on_the_http_port(serve, clients):
    srv = serve()
    address = srv.addresses[0]
    ws = clients(ws_url(address))
    ws.send("ping")
    assert ws.next_message() == b"ping"
    ws.send(b"\x00\x01binary", binary=True)
    assert ws.next_message() == b"\x00\x01binary"
    big = "y" * 200_000
    ws.send(big)
    assert ws.next_message() == big.encode()
    assert get(tcp(address))[2] == b"hello"  # same port still serves HTTP
    wait_for(lambda: len(srv.websocket_manager) == 1, message="one managed websocket")


def test_websocket_gets_path_query_and_headers(serve, clients):
    srv = serve()
    ws = clients(ws_url(srv.addresses[0], "/whoami?since=3&x=y"), headers=[("X-Token", "abc")])
    info = json.loads(ws.next_message())
    assert info == {"path": "/whoami", "query": "since=3&x=y", "token": "abc",
                    "environ_path": "/whoami"}


def test_websocket_unix_endpoint(serve, clients, tmp_path):
    path = str(tmp_path / "ws.sock")
    serve([Endpoint("local", f"unix:{path}")])
    ws = Client(f"ws+unix://{path}")
    ws.resource = "/echo"
    ws.connect()
    try:
        ws.send("over unix")
        assert ws.next_message() == b"over unix"
    finally:
        ws.close()
        wait_for(lambda: ws.terminated, timeout=5, message="client closed")


def test_unknown_websocket_path_is_404(serve):
    srv = serve()
    address = srv.addresses[0]
    status, headers, body = get(tcp(address), "/nowhere", upgrade_headers())
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
    with pytest.raises(HandshakeError, match="404"):
        Client(ws_url(address, "/nowhere")).connect()


def test_bad_handshakes_are_400(serve):
    address = serve().addresses[0]
    status, headers, _ = get(tcp(address), "/echo", upgrade_headers(**{"Sec-WebSocket-Version": "8"}))
    assert status == 400 and headers["Sec-WebSocket-Version"] == "13"
    status, _, body = get(tcp(address), "/echo", upgrade_headers(**{"Sec-WebSocket-Key": "short"}))
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    status, _, _ = get(tcp(address), "/echo", upgrade_headers(Connection="keep-alive"))
    assert status == 400
    assert get(tcp(address))[2] == b"hello"


def test_authorize_hook_refusing_is_401(serve, clients):
    seen = []

    def authorize(headers):
        seen.append(headers.get("authorization"))
        return headers.get("Authorization") == "Bearer s3cret"

    srv = serve(authorize=authorize)
    address = srv.addresses[0]
    status, _, body = get(tcp(address), "/echo", upgrade_headers())
    assert status == 401 and json.loads(body)["error"]["code"] == "forbidden"
    with pytest.raises(HandshakeError, match="401"):
        Client(ws_url(address), headers=[("Authorization", "Bearer wrong")]).connect()
    ws = clients(ws_url(address), headers=[("Authorization", "Bearer s3cret")])
    ws.send("let in")
    assert ws.next_message() == b"let in"
    assert seen == [None, "Bearer wrong", "Bearer s3cret"]
    assert get(tcp(address))[2] == b"hello"  # the hook guards upgrades only


def test_pipelined_request_upgrade_and_frame_in_one_packet(serve):
    """A plain request, the upgrade and a first frame arrive together: all three are served."""
    address = serve().addresses[0]
    key = base64.b64encode(os.urandom(16)).decode()
    request = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
               + (f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
               + masked_text_frame("early bird"))
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(request)
        data = read_until(sock, b"\r\n\r\nhello")
        assert data.startswith(b"HTTP/1.1 200")
        data = read_until(sock, b"early bird", data=data)
        head = data[data.index(b"hello") + 5:]
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        accept = base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert b"Sec-WebSocket-Accept: " + accept in head
        assert head.endswith(bytes([0x81, len("early bird")]) + b"early bird")


def test_fifty_websockets_echo_while_http_answers(serve, clients):
    srv = serve(threads=8)
    address = srv.addresses[0]
    with ThreadPoolExecutor(max_workers=16) as pool:
        sockets = list(pool.map(lambda _: clients(ws_url(address)), range(50)))
    wait_for(lambda: len(srv.websocket_manager) == 50, message="50 managed websockets")

    done = threading.Event()
    answers, failures = [], []

    def keep_getting():
        while not done.is_set():
            try:
                answers.append(get(tcp(address))[2])
            except Exception as exc:  # recorded, asserted below
                failures.append(exc)

    getter = threading.Thread(target=keep_getting)
    getter.start()
    try:
        def talk(ws_index):
            ws = sockets[ws_index]
            for j in range(10):
                ws.send(f"client {ws_index} message {j}")
            return [ws.next_message() for _ in range(10)]

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(talk, range(50)))
        wait_for(lambda: len(answers) >= 5, message="plain GETs answered")
    finally:
        done.set()
        getter.join(10)
    for i, received in enumerate(results):
        assert received == [f"client {i} message {j}".encode() for j in range(10)]
    assert not failures
    assert set(answers) == {b"hello"}


# --------------------------------------------------------------------------------------------
# Stopping


def test_stop_leaves_no_threads_and_closes_websockets(serve, clients, tmp_path):
    before = non_daemon_threads()
    srv = serve([Endpoint("tcp", "127.0.0.1:0"), Endpoint("local", f"unix:{tmp_path}/s.sock")])
    address = srv.addresses[0]
    ws = clients(ws_url(address))
    ws.send("hi")
    assert ws.next_message() == b"hi"
    assert any(t.name == "zsup-websockets" for t in non_daemon_threads())
    srv.stop()
    assert non_daemon_threads() == before
    assert not [t for t in threading.enumerate()
                if t.name == "zsup-http-loop" or t.name.startswith("waitress-")]
    wait_for(lambda: ws.terminated, timeout=5, message="server closed the websocket")
    with pytest.raises(OSError):
        socket.create_connection((address.host, address.port), timeout=2).close()
    srv.stop()  # twice is fine


def test_context_manager_and_no_start_twice(tmp_path):
    before = non_daemon_threads()
    with HTTPServer(hello_app, [Endpoint("t", "127.0.0.1:0")], None) as srv:
        address = srv.addresses[0]
        assert get(tcp(address))[2] == b"hello"
        # no routes at all: every upgrade is a 404
        assert get(tcp(address), "/echo", upgrade_headers())[0] == 404
        with pytest.raises(RuntimeError):
            srv.start()
    assert non_daemon_threads() == before
