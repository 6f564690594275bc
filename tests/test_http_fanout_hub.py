"""The stream hub: hundreds of live feeds and websockets on a few threads, every line to every
fast client in order, a client that stops reading dropped without slowing the others, TLS."""

import base64
import os
import re
import selectors
import socket
import sys
import threading
import time

from conftest import wait_for
from test_http_fanout import ChunkReader
from test_http_server import insecure_context
from test_http_support import GW, gw, sse_blocks, start_gateway  # noqa: F401 (gw: a fixture)

N = 500  # SSE clients, and as many websockets
LINES = 1500  # each must get at least this many, in order

# 10 numbered lines every 10 ms (1,000 lines/s), forever.
CHATTY = ("import sys, time\nn = 0\nwhile True:\n"
          "    sys.stdout.write(''.join('line %d\\n' % (n + i) for i in range(10)))\n"
          "    sys.stdout.flush()\n    n += 10\n    time.sleep(0.01)\n")
# 20 lines of 1 KB every 10 ms (2 MB/s): fills a client's buffers quickly.
BULKY = ("import sys, time\nn = 0\nwhile True:\n"
         "    sys.stdout.write(''.join('line %d %s\\n' % (n + i, 'x' * 1000) for i in range(20)))\n"
         "    sys.stdout.flush()\n    n += 20\n    time.sleep(0.01)\n")


class SSE:
    """A raw HTTP/1.0 eventsource client (no chunking), read by the fleet's one thread."""

    def __init__(self, sock, path):
        self.sock, self.buf, self.head = sock, bytearray(), None
        self.request = f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()

    def feed(self, data):
        self.buf += data
        if self.head is None and b"\r\n\r\n" in self.buf:
            self.head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
            self.buf = bytearray(rest)

    def count(self):
        return self.buf.count(b"\nid: ") + self.buf.startswith(b"id: ")

    def check(self):
        assert self.head.startswith(b"HTTP/1.0 200"), self.head
        blocks = [b for b in sse_blocks(bytes(self.buf)) if "id" in b]
        ids = [int(b["id"]) for b in blocks]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap or a repeat"
        assert all(b["data"] == f"line {i - 1}" for b, i in zip(blocks, ids))


class WS:
    """A raw websocket client of /wstreams: counts text frames, keeps their payloads."""

    def __init__(self, sock, path):
        self.sock, self.buf, self.head, self.frames = sock, bytearray(), None, []
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n").encode()

    def feed(self, data):
        self.buf += data
        if self.head is None:
            if b"\r\n\r\n" not in self.buf:
                return
            self.head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
            self.buf = bytearray(rest)
        buf, pos = self.buf, 0
        while len(buf) - pos >= 2:
            n, start = buf[pos + 1] & 0x7F, pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if len(buf) < start + n:
                break
            self.frames.append((buf[pos] & 0x0F, bytes(buf[start:start + n])))
            pos = start + n
        del buf[:pos]

    def count(self):
        return len(self.frames)

    def check(self):
        assert self.head.startswith(b"HTTP/1.1 101"), self.head
        numbers = [int(re.match(rb"line (\d+)\n$", data).group(1)) for op, data in self.frames]
        assert all(op == 1 for op, _ in self.frames)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a gap or a repeat"


def run_fleet(host, port, clients, until, deadline, watch=lambda: None):
    """Connect every client, send its request and read them all in this one thread."""
    sel = selectors.DefaultSelector()
    for client in clients:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        client.sock = sock
        client.sent = 0
        sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, client)
    try:
        while not until() and time.monotonic() < deadline:
            watch()
            for key, mask in sel.select(0.2):
                client = key.data
                if mask & selectors.EVENT_WRITE:
                    try:
                        client.sent += client.sock.send(client.request[client.sent:])
                    except (BlockingIOError, OSError):
                        continue
                    if client.sent == len(client.request):
                        sel.modify(client.sock, selectors.EVENT_READ, client)
                elif mask & selectors.EVENT_READ:
                    try:
                        data = client.sock.recv(1 << 16)
                    except (BlockingIOError, ConnectionError):
                        continue
                    if not data:
                        sel.unregister(client.sock)
                    client.feed(data)
    finally:
        sel.close()


def test_500_sse_clients_and_500_websockets_on_a_few_threads(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, max_streams=N + 10, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "max_client_connections": 4 * N,
         "max_websockets": N + 10}])
    clients = []
    try:
        g = GW(d, gateway, tmp_path)
        g.load({"name": "chatty", "cmd": sys.executable, "args": ["-u", "-c", CHATTY]})
        pid = g.pid_of("chatty")[0]
        idle_threads = threading.active_count()
        clients = ([SSE(None, f"/streams/{pid}/stdout?feed=eventsource") for _ in range(N)]
                   + [WS(None, f"/wstreams/{pid}") for _ in range(N)])
        most = [0]

        def watch():
            most[0] = max(most[0], threading.active_count())

        run_fleet(g.host, g.port, clients, lambda: all(c.count() >= LINES for c in clients),
                  time.monotonic() + 240, watch)
        hub = gateway.servers[0].stream_hub
        assert len(hub.clients) == 2 * N
        assert gateway.apps[0].open_streams == N
        # No thread per client: the hub's threads, ws4py's manager and waitress's pool (all
        # there before the first client) serve them all.
        assert most[0] <= idle_threads + 1, (most[0], idle_threads)
        assert len([t for t in threading.enumerate() if t.name.startswith("zsup-")]) <= 16
        assert hub.dropped == 0
        for client in clients:
            assert client.count() >= LINES, (type(client).__name__, client.count())
            client.check()
    finally:
        for client in clients:
            client.sock.close()
        try:
            wait_for(lambda: gateway.apps[0].open_streams == 0, timeout=30,
                     message="every stream to be released")
        finally:
            gateway.stop()


def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(gw):
    hub = gw.g.servers[0].stream_hub
    gw.load({"name": "bulky", "cmd": sys.executable, "args": ["-u", "-c", BULKY]})
    pid = gw.pid_of("bulky")[0]
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((gw.host, gw.port))
    slow.sendall(f"GET /streams/{pid}/stdout?feed=eventsource HTTP/1.0\r\n\r\n".encode())
    conn = gw.connection(timeout=30)
    conn.request("GET", f"/streams/{pid}/stdout?feed=eventsource")
    resp = conn.getresponse()
    assert resp.status == 200
    fast = ChunkReader(resp)
    try:
        wait_for(lambda: hub.dropped == 1, timeout=60, message="the slow client to be dropped")
        seen = fast.size
        # The fast client goes on while the dropped one is being closed.
        wait_for(lambda: fast.size >= seen + 2000, timeout=60, message="the fast client's lines")
        slow.settimeout(30)
        data = b""
        while True:  # what the slow client was sent, to the end
            chunk = slow.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        assert data.rstrip().endswith(b'"reason": "the client fell too far behind; reconnect '
                                      b'with Last-Event-ID to resume"}'), data[-300:]
        assert b"event: dropped" in data[-300:]
        wait_for(lambda: gw.g.apps[0].open_streams == 1, timeout=10,
                 message="the dropped client's slot to be freed")
        blocks = [b for b in sse_blocks(fast.text) if "id" in b]
        ids = [int(b["id"]) for b in blocks]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert hub.dropped == 1
    finally:
        slow.close()
        conn.close()


def test_tls_streams_go_through_the_hub(zsupd_factory, tmp_path):
    from test_http_server import self_signed
    cert, key = self_signed(tmp_path)
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, endpoints=[
        {"name": "t", "bind": "127.0.0.1:0", "certfile": str(cert), "keyfile": str(key),
         "max_client_connections": 1024}])
    try:
        import http.client

        class TLSGW(GW):
            def connection(self, timeout=10):
                return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                                   context=insecure_context())

        g = TLSGW(d, gateway, tmp_path)
        g.load({"name": "bulky", "cmd": sys.executable, "args": ["-u", "-c", BULKY]})
        pid = g.pid_of("bulky")[0]
        readers = []
        for _ in range(3):
            c = g.connection(timeout=30)
            c.request("GET", f"/streams/{pid}/stdout?feed=eventsource")
            r = c.getresponse()
            assert r.status == 200
            readers.append((c, ChunkReader(r)))
        wait_for(lambda: all(r.size >= 3000 for _, r in readers), timeout=60,
                 message="3,000 lines over TLS to each client")
        assert len(gateway.servers[0].stream_hub.clients) == 3
        for _, reader in readers:
            blocks = [b for b in sse_blocks(reader.text) if "id" in b]
            ids = [int(b["id"]) for b in blocks]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            assert all(b["data"].startswith(f"line {i - 1} xxx") for b, i in zip(blocks, ids))
        for c, _ in readers:
            c.close()
    finally:
        gateway.stop()
