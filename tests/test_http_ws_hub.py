"""Websockets served by the stream hub: TLS websockets and gaffer's channels cost no thread
each, every websocket route is capped (503 before the upgrade), and a client that resets its
connection is one debug line."""

import base64
import json
import logging
import os
import selectors
import socket
import ssl
import struct
import sys
import threading
import time

from conftest import wait_for
from test_http_fanout_hub import CHATTY
from test_http_server import insecure_context, self_signed
from test_http_support import GW, echo_job, gw, start_gateway  # noqa: F401 (gw: a fixture)

N_TLS = 200  # TLS websockets at once
N_GAFFER = 50  # gaffer channel websockets, as many IO channels and SockJS websockets


def threads_now() -> int:
    """Threads of this process (the gateway runs in it), as /proc counts them."""
    return len(os.listdir("/proc/self/task"))


def upgrade_request(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def client_frame(text: str, opcode: int = 1) -> bytes:
    """A masked client frame (RFC 6455 5.3)."""
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode,)) + (bytes((0x80 | n,)) if n < 126
                                       else struct.pack("!BH", 0x80 | 126, n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Conn:
    """One websocket client: a blocking upgrade, then non-blocking reads of server frames."""

    def __init__(self, host, port, path, context=None):
        sock = socket.create_connection((host, port), timeout=30)
        if context is not None:
            sock = context.wrap_socket(sock)
        self.sock = sock
        sock.sendall(upgrade_request(path))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        self.head, _, rest = buf.partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        self.frames: list[tuple[int, bytes]] = []
        self.eof = False
        sock.setblocking(False)
        if self.upgraded:
            self._parse()

    @property
    def upgraded(self) -> bool:
        return self.head.startswith(b"HTTP/1.1 101")

    def send(self, text: str) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(client_frame(text))
        self.sock.setblocking(False)

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            self.buf += data
        self._parse()

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            n, start = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                return
            self.frames.append((buf[0] & 0x0F, bytes(buf[start:start + n])))
            del buf[:start + n]

    def texts(self) -> list[str]:
        return [p.decode() for op, p in self.frames if op == 1]

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def read_all(conns, until, timeout, watch=lambda: None):
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    try:
        for c in conns:  # what came with the head, or waits decrypted in the SSL object
            c.read()
        while not until():
            watch()
            assert time.monotonic() < deadline, "timed out"
            for key, _ in sel.select(0.2):
                key.data.read()
            for c in conns:
                if isinstance(c.sock, ssl.SSLSocket) and c.sock.pending():
                    c.read()
    finally:
        sel.close()



class TLSGW(GW):
    def connection(self, timeout=10):
        import http.client
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                           context=insecure_context())


def test_tls_websockets_cost_no_thread_each(zsupd_factory, tmp_path):
    cert, key = self_signed(tmp_path)
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "certfile": str(cert), "keyfile": str(key),
         "max_client_connections": 4 * N_TLS, "max_websockets": N_TLS + 10}])
    conns = []
    try:
        g = TLSGW(d, gateway, tmp_path)
        g.load({"name": "chatty", "cmd": sys.executable, "args": ["-u", "-c", CHATTY]})
        g.load(echo_job())
        chatty, echo = g.pid_of("chatty")[0], g.pid_of("echo")[0]
        ctx = insecure_context()
        conns.append(Conn(g.host, g.port, "/channel", ctx))  # the bus fan-out thread starts
        idle = threads_now()
        most = [idle]

        def watch():
            most[0] = max(most[0], threads_now())

        for i in range(N_TLS):
            conns.append(Conn(g.host, g.port, f"/wstreams/{chatty}", ctx))
            watch()
        assert all(c.upgraded for c in conns), conns[1].head
        streams = conns[1:]
        read_all(streams, lambda: all(len(c.frames) >= 300 for c in streams), 180, watch)
        for c in streams:  # every line, in order, over TLS
            numbers = [int(t.split()[1]) for t in c.texts()]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        # stdin over TLS: read and written by the hub thread, the bus call on its task pool
        talker = Conn(g.host, g.port, f"/wstreams/{echo}", ctx)
        talker.send("hello over tls\n")
        read_all([talker], lambda: any("hello over tls" in t for t in talker.texts()), 30)
        hub = gateway.servers[0].stream_hub
        # (the hub's task pool makes its few threads on first use: stdin)
        assert most[0] <= idle + hub.tasks.workers, (most[0], idle)
        assert len(hub.clients) == N_TLS + 2 and hub.dropped == 0
        for c in conns[: N_TLS // 2]:
            c.reset()
        for c in conns[N_TLS // 2:]:
            c.sock.close()
        talker.sock.close()
        wait_for(lambda: len(hub.clients) == 0, timeout=30, message="every websocket closed")
        assert threads_now() <= idle + hub.tasks.workers
    finally:
        for c in conns:
            c.sock.close()
        gateway.stop()


def test_gaffer_channels_and_sockjs_websockets_cost_no_thread_each(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "max_client_connections": 8 * N_GAFFER,
         "max_websockets": 4 * N_GAFFER}])
    conns = []
    try:
        g = GW(d, gateway, tmp_path)
        g.load({"name": "chatty", "cmd": sys.executable, "args": ["-u", "-c", CHATTY]})
        pid = g.pid_of("chatty")[0]
        conns = [Conn(g.host, g.port, "/channel")]  # the gateway's bus fan-out thread starts
        wait_for(lambda: any(t.name == "zsup-http-fanout" for t in threading.enumerate()), timeout=10,
                 message="the bus fan-out thread started by the first channel")
        idle = threads_now()
        most = [idle]

        def watch():
            most[0] = max(most[0], threads_now())

        channels = [Conn(g.host, g.port, "/channel/websocket") for _ in range(N_GAFFER)]
        ios = [Conn(g.host, g.port, f"/{pid}/channel?mode=1") for _ in range(N_GAFFER)]
        sockjs = [Conn(g.host, g.port, f"/channel/000/s{i}/websocket") for i in range(N_GAFFER)]
        conns += channels + ios + sockjs
        assert all(c.upgraded for c in conns)
        for c in channels:
            c.send(json.dumps({"event": "SUB", "data": {"topic": f"STREAM:{pid}"}}))
        for c in sockjs:
            c.send(json.dumps([json.dumps({"event": "SUB", "data": {"topic": f"STREAM:{pid}"}})]))

        def events(c):
            return sum(1 for t in c.texts() if '"gaffer:event"' in t)

        def io_lines(c):
            return sum(1 for _, p in c.frames if p.startswith(b"V1 message "))

        read_all(conns, lambda: (all(events(c) >= 100 for c in channels)
                                 and all(io_lines(c) >= 100 for c in ios)
                                 and all(sum(t.startswith("a[") for t in c.texts()) >= 20
                                         for c in sockjs)), 180, watch)
        tasks = gateway.servers[0].stream_hub.tasks.workers  # made on first use (SUB frames)
        assert most[0] <= idle + tasks, (most[0], idle)
        sample = json.loads(next(t for t in channels[0].texts() if '"gaffer:event"' in t))
        assert sample["data"]["topic"] == f"STREAM:{pid}"
        assert sample["data"]["data"].startswith("line ")
        assert sockjs[0].texts()[0] == "o"
        for c in conns:
            c.sock.close()
        hub = gateway.servers[0].stream_hub
        wait_for(lambda: len(hub.clients) == 0 and not any(
            s for s in hub.all_sources if not s.ended), timeout=30,
            message="every websocket and its subscriptions gone")
    finally:
        for c in conns:
            c.sock.close()
        gateway.stop()


def test_every_websocket_route_is_capped_before_the_upgrade(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "max_client_connections": 64,
         "max_websockets": 2}])
    held = []
    try:
        g = GW(d, gateway, tmp_path)
        g.load(echo_job())
        pid = g.pid_of("echo")[0]
        routes = [f"/wstreams/{pid}", "/channel", "/channel/websocket", f"/{pid}/channel",
                  "/channel/000/abc/websocket", f"/{pid}/channel/000/abc/websocket"]
        held = [Conn(g.host, g.port, "/channel"), Conn(g.host, g.port, f"/wstreams/{pid}")]
        assert all(c.upgraded for c in held)
        for path in routes:
            c = Conn(g.host, g.port, path)
            c.sock.setblocking(True)
            body = bytes(c.buf)
            while body.count(b"\n") < 1:
                body += c.sock.recv(4096)
            c.sock.close()
            assert c.head.startswith(b"HTTP/1.1 503"), (path, c.head)
            body = json.loads(body.decode())
            assert body["error"]["code"] == "unavailable" and "(2)" in body["error"]["message"]
        held.pop().sock.close()
        for path in routes:  # one place free: each route gets it in turn
            def upgraded(path=path):
                c = Conn(g.host, g.port, path)
                c.sock.close()
                return c.upgraded
            wait_for(upgraded, timeout=10, interval=0.1, message=f"{path} once a place is free")
    finally:
        for c in held:
            c.sock.close()
        gateway.stop()


def test_a_websocket_client_that_resets_is_one_debug_line(gw, caplog):
    gw.load(echo_job())
    pid = gw.pid_of("echo")[0]
    hub = gw.g.servers[0].stream_hub
    caplog.set_level(logging.DEBUG, logger="zsup")
    for path in (f"/wstreams/{pid}", "/channel/websocket", f"/{pid}/channel"):
        caplog.clear()
        c = Conn(gw.host, gw.port, path)
        assert c.upgraded
        wait_for(lambda: len(hub.clients) == 1, timeout=10, message="the websocket served")
        c.sock.setblocking(True)
        c.sock.sendall(client_frame("x" * 100)[:20])  # half a frame: the hub reads, then RST
        c.reset()
        wait_for(lambda: len(hub.clients) == 0, timeout=10, message="the websocket gone")
        lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
        assert len(lost) == 1 and all(r.levelno == logging.DEBUG for r in lost), lost
        loud = [r for r in caplog.records if r.levelno >= logging.INFO
                and r.name.startswith("zsup.http")]
        assert loud == [], [r.getMessage() for r in loud]
        assert not any(r.exc_info for r in caplog.records)


class Streaming:
    """A raw SockJS xhr_streaming receiver (HTTP/1.0: the body is the frames as they come)."""

    def __init__(self, host, port, path):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.sendall(f"POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        self.buf = bytearray()
        self.sock.setblocking(False)

    def read(self):
        try:
            while data := self.sock.recv(1 << 16):
                self.buf += data
        except BlockingIOError:
            pass


def test_sockjs_streaming_receivers_cost_no_thread_each(gw):
    gw.load({"name": "chatty", "cmd": sys.executable, "args": ["-u", "-c", CHATTY]})
    pid = gw.pid_of("chatty")[0]
    warm = Conn(gw.host, gw.port, "/channel")  # the gateway's bus fan-out thread starts
    idle = threads_now()
    most = [idle]
    receivers = [Streaming(gw.host, gw.port, f"/channel/000/x{i}/xhr_streaming")
                 for i in range(50)]
    try:
        sub = json.dumps([json.dumps({"event": "SUB", "data": {"topic": f"STREAM:{pid}"}})])
        for i in range(50):
            conn = gw.connection()
            conn.request("POST", f"/channel/000/x{i}/xhr_send", body=sub)
            assert conn.getresponse().status == 204
            conn.close()

        def enough():
            most[0] = max(most[0], threads_now())
            for r in receivers:
                r.read()
            return all(r.buf.count(b'\\"gaffer:event\\"') >= 50 for r in receivers)

        wait_for(enough, timeout=120, interval=0.05, message="events on every receiver")
        assert receivers[0].buf.startswith(b"HTTP/1.0 200")
        assert b"\r\n\r\n" + b"h" * 2048 + b"\no\n" in receivers[0].buf
        tasks = gw.g.servers[0].stream_hub.tasks.workers
        assert most[0] <= idle + tasks, (most[0], idle)
    finally:
        for r in receivers:
            r.sock.close()
        warm.sock.close()
