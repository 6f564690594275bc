"""Hundreds of open streams share the gateway's one SUB socket and leave REST responsive."""

import threading
import time

from conftest import wait_for
from test_http_support import GW, start_gateway, ticker_job

STREAMS = 200


def test_200_streams_while_rest_stays_responsive(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path, max_streams=STREAMS + 10)
    app = gateway.apps[0]
    conns = []
    try:
        g = GW(d, gateway, tmp_path)
        g.load(ticker_job())
        pid = g.pid_of("ticker")[0]
        zsupd_threads = len(__import__("psutil").Process(d.proc.pid).threads())
        for i in range(STREAMS):
            conn = g.connection(timeout=20)
            path = f"/streams/{pid}/stdout?feed=continuous" if i % 2 else "/watch/io.default.ticker."
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            conns.append((conn, resp))
        assert app.open_streams == STREAMS
        # every stream gets live data
        for conn, resp in conns:
            assert resp.readline().strip()
        # REST answers while all of them are open
        slowest = 0.0
        for _ in range(20):
            start = time.monotonic()
            a = g.get("/jobs/default/ticker", timeout=10)
            slowest = max(slowest, time.monotonic() - start)
            assert a.status == 200 and a.json["running"] == 1
        # zsupd holds no thread per stream: they all share the gateway's one subscription
        assert len(__import__("psutil").Process(d.proc.pid).threads()) <= zsupd_threads + 2
        # each /watch has its own subscription; the streams of one process share one (hub)
        # (a subscription closed just now leaves the set when the gate's thread gets to it)
        wait_for(lambda: len(gateway.gate.subscriptions) == STREAMS // 2 + 1, timeout=10,
                 message=f"{STREAMS // 2 + 1} subscriptions (have {len(gateway.gate.subscriptions)})")
    finally:
        for conn, resp in conns:
            resp.close()
            conn.close()
        try:
            wait_for(lambda: app.open_streams == 0, timeout=20, message="streams to be released")
        finally:
            gateway.stop()
    assert slowest < 5.0, slowest  # generous: a sanity check, not a benchmark


def test_a_vanished_client_of_a_silent_stream_frees_its_thread(zsupd_factory, tmp_path):
    from test_http_support import echo_job

    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path)
    app = gateway.apps[0]
    try:
        g = GW(d, gateway, tmp_path)
        g.load(echo_job())
        pid = g.pid_of("echo")[0]
        for path in (f"/streams/{pid}/stdout?feed=continuous", f"/streams/{pid}/stdout?feed=longpoll",
                     "/watch/nothing.here."):
            conn = g.connection()
            conn.request("GET", path)
            # (the response is kept: closing it would close the connection at once)
            resp = conn.getresponse() if "longpoll" not in path else None
            wait_for(lambda: app.open_streams == 1, message="the stream to open")
            if resp is not None:
                resp.close()
            conn.close()  # no heartbeat, no output: only the closed connection tells
            wait_for(lambda: app.open_streams == 0, timeout=10, message=f"{path} to be released")
    finally:
        gateway.stop()


def test_clients_arriving_together_share_one_source(zsupd_factory, tmp_path):
    """The first clients of a stream, served by several workers at once, end up on one
    shared source: one subscription in the gate, not one per worker that raced to make it."""
    d = zsupd_factory("")
    gateway = start_gateway(d, tmp_path)
    conns = []
    try:
        g = GW(d, gateway, tmp_path)
        g.load(ticker_job())
        pid = g.pid_of("ticker")[0]
        before = len(gateway.gate.subscriptions)
        barrier = threading.Barrier(6)
        lock = threading.Lock()

        def open_stream():
            conn = g.connection(timeout=20)
            barrier.wait(10)
            conn.request("GET", f"/streams/{pid}/stdout?feed=continuous")
            resp = conn.getresponse()
            with lock:
                conns.append((conn, resp))

        threads = [threading.Thread(target=open_stream) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(conns) == 6 and all(resp.status == 200 for _, resp in conns)
        for _, resp in conns:
            assert resp.readline().strip()  # each gets live lines
        wait_for(lambda: len(gateway.gate.subscriptions) == before + 1, timeout=10,
                 message=f"one subscription for the six (have {len(gateway.gate.subscriptions) - before})")
    finally:
        for conn, resp in conns:
            resp.close()
            conn.close()
        gateway.stop()
