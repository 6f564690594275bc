#!/usr/bin/env python3
"""Scenario 6, fan-out (zsup only): 5,000 `feed=eventsource` clients and 5,000 websockets
(`/wstreams/<pid>`) of the HTTP gateway on one chatty process.

zsupd runs one job printing 1,000 lines/s (10 lines every 10 ms); the gateway runs as its own
process (`python -m zsup.cli.http_gateway --bus ... --pub ... --bind 127.0.0.1:PORT
--max-client-connections 20000`); the clients (non-blocking sockets in one thread: SSE over
HTTP/1.0, websockets with their RFC 6455 handshake) connect in waves of 500, then read for
5 s (3 in quick mode) after a 3 s warm-up (1 s up to 1,000 clients). Counted: lines per
client (`data:` lines, or text frames). Reported: lines/s delivered to each client (median) and to the slowest one (of
either kind), to all together, what the child produced, and the gateway's threads (most seen
while they are open), RSS and CPU. BENCH_FANOUT_SSE / BENCH_FANOUT_WS change the counts;
BENCH_FANOUT_THREADS sets the gateway's worker pool (`--threads`, default 6 here: the clients
hold no worker, so the pool only serves REST; zsup-http's own default is 32);
BENCH_FANOUT_TLS=1 serves them all over TLS (a self-signed EC certificate made with openssl;
the clients' handshakes are non-blocking too).
If the gateway is missing or fails, the result is {"skipped": reason}, never an exception.
"""

import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

SSE_CLIENTS = int(os.environ.get("BENCH_FANOUT_SSE", "5000"))
WS_CLIENTS = int(os.environ.get("BENCH_FANOUT_WS", "5000"))
CLIENTS = SSE_CLIENTS + WS_CLIENTS
TLS = os.environ.get("BENCH_FANOUT_TLS", "") not in ("", "0")
WAVE = 500  # connections not yet answered at once (the listen backlog is 1024)
WINDOW = 3.0 if bl.QUICK else 5.0
RATE_SCRIPT = ("import sys, time\n"
               "n = 0\n"
               "while True:\n"
               "    sys.stdout.write(''.join('line %d of a chatty process\\n' % (n + i) for i in range(10)))\n"
               "    sys.stdout.flush()\n"
               "    n += 10\n"
               "    time.sleep(0.01)\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Skip(Exception):
    pass


def run_one(kind: str, tuned: bool) -> dict:
    try:
        return measure()
    except Skip as exc:
        bl.progress(f"fanout: skipped: {exc}")
        return {"skipped": str(exc)}


def measure() -> dict:
    import psutil

    gateway_mod = os.path.join(bl.ROOT, "zsup", "cli", "http_gateway.py")
    if not os.path.exists(gateway_mod):
        raise Skip("no HTTP gateway yet (zsup/cli/http_gateway.py is missing)")
    _raise_fd_limit()  # for the clients, and the gateway (it inherits it)
    script = os.path.join(tempfile_dir(), "chatty.py")
    with open(script, "w") as f:
        f.write(RATE_SCRIPT)
    d = bl.ZsupDaemon([bl.Job("chatty", [sys.executable, script], 1)])
    d.start()
    d.wait_ready()
    pid = bl.wait_for(lambda: d.call("pids", name="chatty"), 10, 0.02, "the chatty process")[0]
    port = free_port()
    log_path = os.path.join(d.dir, "gateway.out")
    tls_args = make_cert(d.dir) if TLS else []
    with open(log_path, "ab") as log:
        gw = subprocess.Popen([bl.ZSUP_PY, "-m", "zsup.cli.http_gateway", "--bus", d.bus, "--pub", d.pub,
                               "--bind", f"127.0.0.1:{port}", "--max-client-connections", "20000",
                               "--max-streams", str(SSE_CLIENTS + 100),
                               "--max-websockets", str(WS_CLIENTS + 100),
                               "--threads", os.environ.get("BENCH_FANOUT_THREADS", "6"), *tls_args],
                              stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONPATH=bl.ROOT), cwd=d.dir)

    def tail():
        with open(log_path, errors="replace") as f:
            return " ".join(f.read()[-300:].split())

    try:
        deadline = time.monotonic() + 15
        while True:
            if gw.poll() is not None:
                raise Skip(f"the gateway exited with {gw.returncode}: {tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise Skip("the gateway does not accept connections after 15 s") from None
                time.sleep(0.05)
        result = fan_out(port, pid, d, gw)
        result["gateway_rss_mb"] = psutil.Process(gw.pid).memory_info().rss / 2**20
        return result
    finally:
        gw.terminate()
        try:
            gw.wait(5)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
        d.stop()


def make_cert(folder: str) -> list[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise Skip("BENCH_FANOUT_TLS needs the openssl command")
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True,
                   timeout=60)
    os.chmod(key, 0o600)
    return ["--certfile", cert, "--keyfile", key]


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bench-fanout-")


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fan_out(port: int, pid: int, d, gw) -> dict:
    import base64

    import psutil

    gproc = psutil.Process(gw.pid)
    sel = selectors.DefaultSelector()
    sse_request = (f"GET /streams/{pid}/stdout?feed=eventsource HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()

    def ws_request() -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET /wstreams/{pid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()

    kinds = ["sse"] * SSE_CLIENTS + ["ws"] * WS_CLIENTS
    state: dict = {}
    ctx = None
    if TLS:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    def handshake(s, st) -> None:
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            sel.modify(s, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            sel.modify(s, selectors.EVENT_WRITE)
            return
        except OSError:
            st["closed"] = True
            sel.unregister(s)
            return
        st["hs"] = False
        sel.modify(s, selectors.EVENT_WRITE)

    def recv_all(s) -> bytes:
        data = s.recv(1 << 18)
        if data and ctx is not None:
            while s.pending():
                data += s.recv(1 << 18)
        return data
    threads = [gproc.num_threads()]

    def pump(until: float) -> None:
        while time.monotonic() < until:
            for key, mask in sel.select(0.05):
                s = key.fileobj
                st = state[s]
                if st["hs"]:
                    handshake(s, st)
                    continue
                if mask & selectors.EVENT_WRITE:
                    try:
                        st["sent"] += s.send(st["request"][st["sent"]:])
                    except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                            ssl.SSLWantReadError):
                        continue
                    except OSError:
                        st["closed"] = True
                        sel.unregister(s)
                        continue
                    if st["sent"] == len(st["request"]):
                        sel.modify(s, selectors.EVENT_READ)
                    continue
                try:
                    data = recv_all(s)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    st["closed"] = True
                    sel.unregister(s)
                    continue
                if st["status"] is None:
                    st["head"] += data
                    if b"\r\n\r\n" not in st["head"]:
                        continue
                    head, _, data = st["head"].partition(b"\r\n\r\n")
                    st["status"] = head.split(b"\r\n", 1)[0]
                    data = b"\n" + data
                if st["kind"] == "ws":  # one text frame per line, each ending with its \n
                    st["lines"] += data.count(b"\n")
                else:
                    buf = st["carry"] + data
                    st["lines"] += buf.count(b"\ndata:")
                    st["carry"] = buf[-5:]

    t_conn = time.monotonic()
    deadline = t_conn + 120
    opened = 0
    while time.monotonic() < deadline:
        waiting = sum(1 for st in state.values() if st["status"] is None and not st["closed"])
        while opened < CLIENTS and waiting < WAVE:
            kind = kinds[opened]
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            if ctx is not None:
                s = ctx.wrap_socket(s, do_handshake_on_connect=False)
            state[s] = {"kind": kind, "request": sse_request if kind == "sse" else ws_request(),
                        "sent": 0, "head": b"", "status": None, "carry": b"", "lines": 0,
                        "closed": False, "hs": ctx is not None}
            sel.register(s, selectors.EVENT_WRITE)
            opened += 1
            waiting += 1
        if opened == CLIENTS and not waiting:
            break
        pump(time.monotonic() + 0.05)
    t_conn = time.monotonic() - t_conn
    # Warm-up: every feed subscribed, and the backlog of the connect phase drained.
    pump(time.monotonic() + (1.0 if CLIENTS <= 1000 else 3.0))
    want = {"sse": b" 200", "ws": b" 101"}
    bad = [st["status"] for st in state.values()
           if st["status"] is None or want[st["kind"]] not in st["status"]]
    if bad:
        for s in state:
            s.close()
        raise Skip(f"{len(bad)} of {CLIENTS} clients got no 200/101 answer (e.g. {bad[0]!r})")
    c0 = gproc.cpu_times()
    seq0 = d.call("get_process", pid=pid)["last_seq"]["stdout"]
    for st in state.values():
        st["lines"] = 0
    t0 = time.monotonic()
    while time.monotonic() < t0 + WINDOW:
        pump(time.monotonic() + 0.5)
        threads.append(gproc.num_threads())
    t1 = time.monotonic()
    seq1 = d.call("get_process", pid=pid)["last_seq"]["stdout"]
    c1 = gproc.cpu_times()
    per = sorted(st["lines"] / (t1 - t0) for st in state.values())
    per_ws = sorted(st["lines"] / (t1 - t0) for st in state.values() if st["kind"] == "ws") or [0.0]
    per_sse = sorted(st["lines"] / (t1 - t0) for st in state.values() if st["kind"] == "sse") or [0.0]
    closed = sum(st["closed"] for st in state.values())
    for s in state:
        s.close()
    return {"clients": CLIENTS, "sse_clients": SSE_CLIENTS, "ws_clients": WS_CLIENTS, "tls": TLS,
            "closed_early": closed, "all_answered_s": t_conn,
            "produced_lines_per_s": (seq1 - seq0) / (t1 - t0),
            "per_client_lines_per_s": bl.median(per), "slowest_client_lines_per_s": per[0],
            "slowest_sse_lines_per_s": per_sse[0], "slowest_ws_lines_per_s": per_ws[0],
            "all_lines_per_s": sum(per), "gateway_threads": max(threads),
            "gateway_cpu_pct": ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0) * 100}


if __name__ == "__main__":
    # One round: connecting 10,000 clients takes most of a minute, and `make bench` gives
    # this scenario 120 s (scripts/bench.py).
    bl.scenario_main("fanout", run_one, variants=[("zsup", False)], default_rounds=1)
