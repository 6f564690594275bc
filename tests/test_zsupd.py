"""zsupd as users and programs see it: a real daemon driven over the real bus."""

import json
import os
import signal
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
import zmq
from conftest import PYTHON, ROOT, alive, kill_tree, wait_for

from zsup.bus.client import Client, Subscriber
from zsup.errors import BadRequest, NotFound, Unavailable

SLEEP = "[process:{name}]\ncmd = sleep 300\nnumprocesses = {n}\n"


def running(d, job):
    rows = {r["job"]: r for r in d.call("status")}
    return rows.get(job, {}).get("running", 0)


def test_every_manager_operation_is_a_command(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=2))
    with d.client() as c:
        assert c.call("ping") == "pong"
        assert c.call("version")["protocol"] == 1
        wait_for(lambda: running(d, "default.web") == 2)
        assert c.call("jobs") == ["default.web"]
        assert c.call("sessions") == ["default"]
        assert c.call("scale", name="web", n="=3") == {"job": "default.web", "numprocesses": 3}
        wait_for(lambda: len(c.call("pids", name="web")) == 3)
        pid = c.call("pids", name="web")[0]
        assert c.call("get_process", pid=pid)["job"] == "default.web"
        assert c.call("kill", pid=pid, sig="TERM")["signal"] == signal.SIGTERM
        c.call("load", config={"name": "once", "cmd": "echo", "args": ["hi"], "numprocesses": 0})
        one = c.call("commit", name="once")["pid"]
        wait_for(lambda: c.call("read_output", pid=one)["lines"])
        assert c.call("read_output", pid=one)["lines"] == [{"seq": 1, "data": "hi\n"}]
        assert c.call("info", name="web")["numprocesses"] == 3
        assert c.call("get", name="once")["cmd"] == "echo"
        st = c.call("stats", name="web")
        assert len(st["processes"]) == 3
        c.call("stop_job", name="web")
        wait_for(lambda: running(d, "default.web") == 0)
        c.call("start_job", name="web")
        wait_for(lambda: running(d, "default.web") == 3)
        c.call("unload", name="once")
        assert c.call("jobs") == ["default.web"]
        for cmd in ("load", "unload", "update", "start_job", "stop_job", "scale", "commit", "jobs", "sessions",
                    "info", "stats", "pids", "get_process", "stop_process", "kill", "killall", "send",
                    "read_output", "ping", "version", "reload", "restart"):
            assert cmd in c.call("commands")


def test_errors_have_codes_and_change_nothing(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=1))
    with d.client() as c:
        with pytest.raises(NotFound, match="no job default.nope"):
            c.call("info", name="nope")
        with pytest.raises(BadRequest, match="unknown command"):
            c.call("explode")
        with pytest.raises(BadRequest, match="missing argument 'name'"):
            c.call("scale", n=2)
        with pytest.raises(BadRequest, match="unknown argument"):
            c.call("jobs", bogus=1)
        with pytest.raises(BadRequest, match="numprocesses"):
            c.call("load", config={"name": "bad", "cmd": "x", "numprocesses": -1})
        with pytest.raises(BadRequest):
            c.call("scale", name="web", n="lots")
        assert c.call("jobs") == ["default.web"]
        assert c.call("info", name="web")["numprocesses"] == 1


def test_malformed_frames_are_answered_without_harm(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=1))
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(d.bus)
    try:
        for frames in ([b"", b"not json"], [b"", b"[1, 2]"], [b"", b'{"id": "x"}'], [b"", b'{"cmd": 5}'],
                       [b"", b"x" * (2 << 20)], [b"", b'{"cmd": "scale", "args": "nope"}']):
            sock.send_multipart(frames)
            assert sock.poll(5000), f"no reply to {frames[1][:40]!r}"
            reply = json.loads(sock.recv_multipart()[-1])
            assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        sock.send_multipart([b"", b'{"id": "keep", "cmd": "nope"}'])
        assert sock.poll(5000)
        assert json.loads(sock.recv_multipart()[-1])["id"] == "keep"
    finally:
        sock.close()
    assert d.call("ping") == "pong" and running(d, "default.web") == 1


def test_sockets_are_owner_only(zsupd_factory):
    d = zsupd_factory("")
    assert stat.S_IMODE(os.stat(d.state_dir).st_mode) == 0o700
    for name in ("zsupd.sock", "zsupd-pub.sock"):
        assert stat.S_IMODE(os.stat(os.path.join(d.state_dir, name)).st_mode) == 0o600


def test_second_daemon_on_same_state_dir_is_refused(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    other = zsupd_factory("", start=False, path=tmp_path)
    other.start(wait=False)
    wait_for(lambda: other.proc.poll() is not None, timeout=15)
    assert other.proc.returncode != 0
    assert d.call("ping") == "pong"


def test_events_and_output_on_the_pub_socket(zsupd_factory):
    config = f"[process:echo]\ncmd = {PYTHON} {ROOT}/etc/echo.py\nredirect_input = true\n"
    d = zsupd_factory(config)
    with Subscriber(d.pub, ["io.default.echo.", "proc.default.echo."]) as sub, d.client() as c:
        pid = c.call("pids", name="echo")[0]
        got = []

        def echoed():
            c.call("send", pid=pid, data="ping\n")
            ev = sub.recv(0.2)
            while ev is not None:
                got.append(ev)
                if ev.topic.startswith("io."):
                    return ev
                ev = sub.recv(0.05)

        ev = wait_for(echoed, timeout=10, message="echo output on the pub socket")
        assert ev.topic == f"io.default.echo.{pid}.stdout"
        assert ev.data == b"ping\n" and ev.msg["lines"] == 1 and ev.msg["pid"] == pid
        c.call("stop_process", pid=pid)
        wait_for(lambda: any(e.topic == "proc.default.echo.exit" for e in got) or
                 (lambda e: e and got.append(e))(sub.recv(0.1)), timeout=10)


def test_reload_applies_only_the_difference(zsupd_factory):
    base = SLEEP.format(name="keep", n=1) + SLEEP.format(name="change", n=1) + SLEEP.format(name="gone", n=1)
    d = zsupd_factory(base)
    wait_for(lambda: all(running(d, f"default.{j}") == 1 for j in ("keep", "change", "gone")))
    keep_pid = d.call("pids", name="keep")
    change_pid = d.call("pids", name="change")
    d.call("scale", name="keep", n="=2")  # a run-time change to an unchanged section survives
    wait_for(lambda: running(d, "default.keep") == 2)
    new = (SLEEP.format(name="keep", n=1) + "[process:change]\ncmd = sleep 301\n" + SLEEP.format(name="new", n=1))
    with open(d.config_path, "w") as f:
        f.write(new)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "default.new" in d.call("jobs") and "default.gone" not in d.call("jobs"))
    wait_for(lambda: running(d, "default.change") == 1 and d.call("pids", name="change") != change_pid)
    assert set(keep_pid) <= set(d.call("pids", name="keep"))  # untouched
    assert running(d, "default.keep") == 2
    # the same through the bus, with a report of what changed
    with open(d.config_path, "w") as f:
        f.write(new + SLEEP.format(name="third", n=1))
    result = d.call("reload_config")
    assert result["added"] == ["default.third"] and result["removed"] == [] and result["changed"] == []


def test_bad_reload_keeps_the_old_config(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=1))
    wait_for(lambda: running(d, "default.web") == 1)
    pids = d.call("pids", name="web")
    with open(d.config_path, "w") as f:
        f.write("[process:web]\ncmd = sleep 300\nnumprocesses = many\n")
    with pytest.raises(BadRequest, match=r"\[process:web\] numprocesses"):
        d.call("reload_config")
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in d.log())
    assert d.call("pids", name="web") == pids and d.call("ping") == "pong"


def test_bad_config_at_start_is_one_clear_line(zsupd_factory):
    d = zsupd_factory("[process:web]\ncmd = sleep 300\nnumprocesses = -1\n", start=False)
    d.start(wait=False)
    assert d.proc.wait(15) == 2
    out = d.log().strip().splitlines()
    assert len(out) == 1 and "zsup.ini: [process:web] numprocesses" in out[0]


def test_runtime_state_survives_a_restart(zsupd_factory, tmp_path):
    d = zsupd_factory(SLEEP.format(name="web", n=1) + SLEEP.format(name="off", n=1))
    d.call("load", config={"name": "extra", "cmd": "sleep", "args": ["300"], "numprocesses": 2})
    d.call("load_session", session="app", configs=[{"name": "w", "cmd": "sleep 300"}])
    d.call("scale", name="web", n="=3")
    d.call("stop_job", name="off")
    assert d.stop() == 0
    d2 = zsupd_factory(open(d.config_path).read(), path=tmp_path)
    wait_for(lambda: running(d2, "default.web") == 3 and running(d2, "default.extra") == 2
             and running(d2, "app.w") == 1)
    assert running(d2, "default.off") == 0
    d2.call("unload", name="extra")
    assert d2.stop() == 0
    d3 = zsupd_factory(open(d.config_path).read(), path=tmp_path)
    wait_for(lambda: running(d3, "default.web") == 3)
    assert "default.extra" not in d3.call("jobs")


def test_changed_section_resets_runtime_changes(zsupd_factory, tmp_path):
    d = zsupd_factory(SLEEP.format(name="web", n=1))
    d.call("scale", name="web", n="=3")
    d.stop()
    d2 = zsupd_factory("[process:web]\ncmd = sleep 302\nnumprocesses = 1\n", path=tmp_path)
    wait_for(lambda: running(d2, "default.web") == 1)
    assert d2.call("info", name="web")["numprocesses"] == 1


def test_webhook_reaches_a_local_http_server(zsupd_factory):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = (f"[webhooks]\ncreate = {url}/create\nproc.web.spawn = {url}/spawn\n"
                  f"dead = http://127.0.0.1:9/never\n" + SLEEP.format(name="web", n=1))
        d = zsupd_factory(config)
        wait_for(lambda: {p for p, _ in received} >= {"/create", "/spawn"})
        spawn = next(m for p, m in received if p == "/spawn")
        assert spawn["topic"] == "proc.default.web.spawn" and spawn["pid"] >= 1
        assert d.call("ping") == "pong"
    finally:
        server.shutdown()


def test_slow_subscriber_does_not_slow_supervision(zsupd_factory):
    config = "[process:chatty]\ncmd = yes zsup-flood\nlog = false\n" + SLEEP.format(name="web", n=1)
    d = zsupd_factory(config)
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.rcvhwm = 10
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(d.pub)
    try:
        wait_for(lambda: stalled.poll(100), message="the stalled subscriber to be connected")
        with d.client(timeout=5) as c:
            # never read `stalled`; commands and restarts must still be served promptly
            for _ in range(20):
                assert c.call("ping") == "pong"
            pid = c.call("pids", name="web")[0]
            os.kill(c.call("get_process", pid=pid)["os_pid"], signal.SIGKILL)
            wait_for(lambda: [p for p in c.call("pids", name="web") if p != pid], timeout=15,
                     message="the killed process to be replaced")
            chatty = c.call("pids", name="chatty")[0]
            seq = c.call("read_output", pid=chatty, limit=1)["last_seq"]
            wait_for(lambda: c.call("read_output", pid=chatty, limit=1)["last_seq"] > seq + 10000)
    finally:
        stalled.close()


def test_sigterm_stops_children_gracefully(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=3))
    wait_for(lambda: running(d, "default.web") == 3)
    kids = d.children()
    assert d.stop() == 0
    assert not any(alive(p) for p in kids)


def test_a_signal_that_lands_on_another_thread_still_stops_zsupd(zsupd_factory):
    """The kernel may deliver SIGTERM to any thread of zsupd; the main thread must still wake.
    tgkill aims it at a thread that is not the main one, as a busy daemon sees it."""
    import ctypes

    d = zsupd_factory('[process:one]\ncmd = sleep 300\n')
    d.call("status")
    others = [int(t) for t in os.listdir(f"/proc/{d.proc.pid}/task") if int(t) != d.proc.pid]
    assert others, "zsupd runs threads"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(d.proc.pid, others[-1], signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
    d.proc.wait(20)
    assert d.proc.returncode == 0


def test_no_orphans_when_zsupd_is_sigkilled(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=3))
    wait_for(lambda: running(d, "default.web") == 3)
    os_pids = [d.call("get_process", pid=p)["os_pid"] for p in d.call("pids", name="web")]
    wait_for(lambda: all("setpriv" not in (psutil.Process(p).cmdline() or ["setpriv"])[0] for p in os_pids))
    try:
        d.proc.kill()
        d.proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in os_pids), message="children to die with zsupd")
    finally:
        kill_tree(os_pids)


def test_grandchildren_are_reaped_and_stopped(zsupd_factory):
    # the shell leaves a background child behind, in a session (and group) of its own, and
    # exits: zsupd (a subreaper) adopts it. (One left in the shell's group is stopped at once:
    # tests/test_leftovers.py.)
    d = zsupd_factory("[process:leaver]\ncmd = sh -c 'setsid sleep 300 & echo $!'\nnumprocesses = 0\n")
    pid = d.call("commit", name="leaver")["pid"]
    line = wait_for(lambda: d.call("read_output", pid=pid)["lines"])
    orphan = int(line[0]["data"])
    try:
        wait_for(lambda: psutil.Process(orphan).ppid() == d.proc.pid, message="zsupd to adopt the orphan")
        assert d.stop() == 0
        wait_for(lambda: not alive(orphan), message="the adopted grandchild to be stopped")
    finally:
        kill_tree([orphan])


def test_daemon_mode_pidfile_and_verbose_output(tmp_path):
    import subprocess

    state = tmp_path / "state"
    pidfile = tmp_path / "zsupd.pid"
    logfile = tmp_path / "zsupd.log"
    config = tmp_path / "zsup.ini"
    config.write_text("[process:hello]\ncmd = sh -c 'echo hello from child; sleep 300'\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    rc = subprocess.call([PYTHON, "-m", "zsup.cli.zsupd", "-c", str(config), "--state-dir", str(state),
                          "--daemon", "--pidfile", str(pidfile), "--log-file", str(logfile), "-vv"], env=env)
    assert rc == 0  # the foreground process returns at once
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()))
    try:
        # the pid file comes before the bus answers (and ping waits for the jobs to be loaded)
        def answers():
            try:
                with Client(f"ipc://{state}/zsupd.sock", timeout=1) as c:
                    return c.call("ping") == "pong"
            except Unavailable:
                return False

        wait_for(answers, timeout=20, interval=0.05, message="the daemon to answer ping")
        assert psutil.Process(pid).ppid() != os.getpid()  # detached from us
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), timeout=20)
        assert not pidfile.exists()
        assert "zsupd started" in logfile.read_text()
    finally:
        kill_tree([pid])


def test_verbose_prints_child_output(zsupd_factory):
    d = zsupd_factory("[process:hello]\ncmd = sh -c 'echo hello from child; sleep 300'\n", args=["-vv"])
    wait_for(lambda: "default.hello.1 | hello from child" in d.log())


def test_tcp_bus_needs_curve_unless_insecure_loopback(zsupd_factory, tmp_path):
    d = zsupd_factory("[zsup]\nbus_tcp = tcp://127.0.0.1:0\n", start=False)
    d.start(wait=False)
    assert d.proc.wait(15) != 0
    assert "CURVE" in d.log() or "curve" in d.log()
    d2 = zsupd_factory("[zsup]\nbus_tcp = tcp://127.0.0.1:0\ninsecure_tcp = true\n", path=tmp_path / "b")
    assert d2.call("ping") == "pong"


def test_stats_are_published_only_while_someone_subscribes(zsupd_factory):
    d = zsupd_factory(SLEEP.format(name="web", n=2))
    with Subscriber(d.pub, ["stats.default.web"]) as sub:
        ev = wait_for(lambda: sub.recv(0.2), timeout=15, message="a stats event")
        assert ev.topic.startswith("stats.default.web.")
        for key in ("cpu", "mem", "rss", "vms", "ctime", "username", "nice", "cmdline", "children"):
            assert key in ev.msg
    # nobody listens to stats any more (a catch-all subscriber does not count): no sampling
    with Subscriber(d.pub, [""]) as everything:
        def quiet_for_a_sampling_interval():
            # The unsubscription reaches the publisher asynchronously, and a sample already
            # taken may still be on its way: wait for one whole interval without stats.
            end = time.monotonic() + 1.2
            while time.monotonic() < end:
                ev = everything.recv(0.1)
                if ev is not None and ev.topic.startswith("stats."):
                    return False
            return True

        wait_for(lambda: d.call("ping") and quiet_for_a_sampling_interval(), timeout=15)
        seen = []
        end = time.monotonic() + 2.5  # more than two sampling intervals
        while time.monotonic() < end:
            ev = everything.recv(0.1)
            if ev is not None:
                seen.append(ev.topic)
        assert not [t for t in seen if t.startswith("stats.")]


def test_grandchildren_die_too_when_zsupd_is_sigkilled(zsupd_factory):
    d = zsupd_factory("[process:family]\ncmd = sh -c 'sleep 300 & echo $!; wait'\n")
    pid = d.call("pids", name="family")[0]
    grandchild = int(wait_for(lambda: d.call("read_output", pid=pid)["lines"])[0]["data"])
    child = d.call("get_process", pid=pid)["os_pid"]
    try:
        d.proc.kill()
        d.proc.wait(10)
        wait_for(lambda: not alive(child) and not alive(grandchild), message="the whole family to die")
    finally:
        kill_tree([child, grandchild])


def test_tcp_bus_with_curve_for_zsupctl(zsupd_factory, tmp_path):
    import subprocess

    from zsup.bus.curve import generate_keypair

    keys = tmp_path / "keys"
    server_public, server_secret = generate_keypair(str(keys / "server"), "server")
    client_public, client_secret = generate_keypair(str(keys / "clients"), "alice")
    d = zsupd_factory(f"[zsup]\nbus_tcp = tcp://127.0.0.1:0\ncurve_secret_key_file = {server_secret}\n"
                      f"curve_public_key_file = {server_public}\ncurve_authorized_keys = {keys / 'clients'}\n"
                      + SLEEP.format(name="web", n=1))
    tcp = [e for e in d.call("endpoints")["router"] if e.startswith("tcp://")][0]

    def zsupctl(*args):
        return subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--bus", tcp, "--timeout", "2", *args],
                              capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))

    ok = zsupctl("--curve-key", client_secret, "--server-key", server_public, "processes")
    assert ok.returncode == 0 and "default.web" in ok.stdout
    refused = zsupctl("processes")  # no keys: the server never answers
    assert refused.returncode == 1 and "no zsupd answering" in refused.stderr


def test_scale_announces_the_jobs_update(zsupd_factory):
    """gaffer's manager announces a scale as the job's `update`; zsup does too (not on a no-op)."""
    d = zsupd_factory(SLEEP.format(name="web", n=1))
    with Subscriber(d.pub, ["job.default.web.update"]) as sub:
        # scale up one at a time until the subscription is through (ZeroMQ's slow joiner)
        ev = wait_for(lambda: d.call("scale", name="web", n=1) and sub.recv(0.2), timeout=10,
                      message="the update event")
        count = d.call("info", name="web")["numprocesses"]
        assert ev.msg["job"] == "default.web" and 2 <= ev.msg["numprocesses"] <= count
        while sub.recv(0.2) is not None:
            pass
        d.call("scale", name="web", n=f"={count}")
        assert sub.recv(0.5) is None  # nothing changed, nothing announced
