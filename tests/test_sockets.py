"""Shared listening sockets (issue 16): zsupd binds [socket:NAME], a job's processes get it
from fd 3 with systemd's LISTEN_* variables, and a restart of the job refuses no connection."""

import os
import socket
import threading

import pytest
from conftest import PYTHON, wait_for

from zsup.daemon.config import ConfigError, parse_config

# Accepts on the fd given by --fd and answers each client with what it was given.
# On SIGTERM it finishes the client it serves, as a real server does, and leaves the rest queued
# in the socket zsupd keeps open.
SERVER = """\
import os, select, signal, socket, sys
fd = int(sys.argv[sys.argv.index("--fd") + 1])
srv = socket.socket(fileno=fd)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while not stop:
    if not select.select([srv], [], [], 0.1)[0]:
        continue
    conn, _ = srv.accept()
    conn.sendall(f"{os.getpid()} {os.environ.get('LISTEN_PID')} {os.environ.get('LISTEN_FDS')} "
                 f"{os.environ.get('LISTEN_FDNAMES')} {fd}\\n".encode())
    conn.close()
"""


def ask(address, timeout=5.0) -> str:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(200)
            if not chunk:
                break
            data += chunk
        return data.decode()


def config(tmp_path, extra_socket="", port=None):
    server = tmp_path / "server.py"
    server.write_text(SERVER)
    bind = f"127.0.0.1:{port}" if port else f"unix:{tmp_path}/web.sock"
    return (f"[socket:other]\nbind = unix:{tmp_path}/other.sock\n{extra_socket}"
            f"[socket:web]\nbind = {bind}\nbacklog = 512\n\n"
            f"[process:web]\ncmd = {PYTHON} {server} --fd $(socket.web)\nsockets = other, web\ngraceful_timeout = 5\n")


def test_server_inherits_the_socket(zsupd_factory, tmp_path):
    d = zsupd_factory(config(tmp_path))
    address = str(tmp_path / "web.sock")
    wait_for(lambda: d.call("pids", name="web"))
    pid, listen_pid, fds, names, fd = ask(address).split()
    assert pid == listen_pid  # LISTEN_PID is the server's own pid
    assert (fds, names, fd) == ("2", "other:web", "4")
    os_pid = d.call("get_process", pid=d.call("pids", name="web")[0])["os_pid"]
    assert int(pid) == os_pid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_restart_refuses_no_connection(zsupd_factory, tmp_path):
    port = free_port()
    d = zsupd_factory(config(tmp_path, port=port))
    wait_for(lambda: d.call("pids", name="web"))
    first = ask(("127.0.0.1", port)).split()[0]
    errors, answers, done = [], [], threading.Event()

    def client():
        while not done.is_set():
            try:
                answers.append(ask(("127.0.0.1", port), timeout=10).split()[0])
            except (OSError, IndexError) as exc:  # refused, reset, or closed unanswered
                errors.append(exc)

    t = threading.Thread(target=client)
    t.start()
    try:
        for n in (2, 3):  # each restart: answers from a new process
            d.call("restart_job", name="web")
            wait_for(lambda: len(set(answers) | {first}) >= n, timeout=15)
        before = len(answers)
        d.call("reload")  # the socket is unchanged: kept
        wait_for(lambda: len(answers) > before + 10, timeout=15)
    finally:
        done.set()
        t.join(15)
    assert errors == []
    assert len(set(answers) | {first}) >= 3  # served by three different processes


def test_socket_sections_are_checked(tmp_path):
    for text, words in [("[socket:a]\nbind = nowhere\n", r"\[socket:a\] bind: expected HOST:PORT"),
                        ("[socket:a]\nbind = 127.0.0.1:1\nmode = 600\n", r"\[socket:a\] mode: only for a unix"),
                        ("[socket:a]\nbind = unix:/x\nbacklog = 0\n", r"\[socket:a\] backlog: must be >= 1"),
                        ("[socket:a]\nbind = unix:/x\ncolor = red\n", r"\[socket:a\] color: unknown key"),
                        ("[process:w]\ncmd = true\nsockets = a\n", r"\[process:w\] sockets: no \[socket:a\]"),
                        ("[socket:a]\nbind = unix:/x\n[process:w]\ncmd = x $(socket.b)\nsockets = a\n",
                         r"\[process:w\] cmd: \$\(socket.b\) names a socket")]:
        with pytest.raises(ConfigError, match=words):
            parse_config(text)


def test_a_port_in_use_stops_zsupd_with_a_clear_error(zsupd_factory, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        d = zsupd_factory(config(tmp_path, port=busy.getsockname()[1]), start=False)
        d.start(wait=False)
        assert d.proc.wait(15) == 1
        assert "[socket:web] bind 127.0.0.1:" in d.log() and "in use" in d.log()


def test_unix_socket_mode_and_removal(zsupd_factory, tmp_path):
    d = zsupd_factory(config(tmp_path, extra_socket="mode = 600\n"))
    other = tmp_path / "other.sock"
    assert oct(os.stat(other).st_mode & 0o777) == "0o600"
    d.stop()
    assert not other.exists()


def test_reload_keeps_binds_and_refuses(zsupd_factory, tmp_path):
    d = zsupd_factory(config(tmp_path))
    web = str(tmp_path / "web.sock")
    wait_for(lambda: d.call("pids", name="web"))
    inode = os.stat(web).st_ino
    text = open(d.config_path).read()
    # a new socket, and `other` gone: bound and closed; `web` untouched
    with open(d.config_path, "w") as f:
        f.write(text.replace("other", "third"))
    assert d.call("reload")["changed"] == ["default.web"]
    assert os.stat(web).st_ino == inode and (tmp_path / "third.sock").exists()
    assert not (tmp_path / "other.sock").exists()
    wait_for(lambda: ask(web).split()[3] == "third:web")
    # a socket that cannot be bound: the reload is refused, nothing changes
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with open(d.config_path, "w") as f:
            f.write(f"[socket:tcp]\nbind = 127.0.0.1:{busy.getsockname()[1]}\n"
                    + text.replace("other", "third"))
        from zsup.errors import ZsupError

        with pytest.raises(ZsupError, match=r"\[socket:tcp\] bind 127.0.0.1:\d+: Address already in use"):
            d.call("reload")
    assert (tmp_path / "third.sock").exists() and os.stat(web).st_ino == inode
    assert ask(web).split()[3] == "third:web"


def test_rolling_restart_refuses_no_connection(zsupd_factory, tmp_path):
    port = free_port()
    d = zsupd_factory(config(tmp_path, port=port).replace("graceful_timeout", "numprocesses = 2\n"
                                                         "restart_mode = rolling\ngraceful_timeout"))
    wait_for(lambda: len(d.call("pids", name="web")) == 2)
    errors, answers, done = [], [], threading.Event()

    def client():
        while not done.is_set():
            try:
                answers.append(ask(("127.0.0.1", port), timeout=10).split()[0])
            except (OSError, IndexError) as exc:
                errors.append(exc)

    t = threading.Thread(target=client)
    t.start()
    try:
        wait_for(lambda: len(answers) > 5)
        old = set(d.call("pids", name="web"))
        d.call("rolling_restart", name="web")
        wait_for(lambda: len(set(d.call("pids", name="web")) & old) == 0, timeout=20)
        before = len(answers)
        wait_for(lambda: len(answers) > before + 5)
    finally:
        done.set()
        t.join(15)
    assert errors == []


def test_zsupd_own_listen_variables_are_not_passed_on(manager, recorder, monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "2")  # as if systemd had started zsupd with sockets
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    manager.load({"name": "show", "cmd": "sh", "args": ["-c", "echo ${LISTEN_FDS-none} ${LISTEN_PID-none}"],
                  "numprocesses": 0})
    pid = manager.commit("show")
    wait_for(lambda: recorder.find(".show.reap"))
    assert recorder.output(pid) == b"none none\n"


def test_a_runtime_job_naming_an_unknown_socket_fails_to_spawn(manager, recorder):
    manager.load({"name": "srv", "cmd": "true", "sockets": ["nope"], "numprocesses": 0})
    from zsup.errors import ZsupError

    with pytest.raises(ZsupError, match="sockets: zsupd has no socket 'nope'"):
        manager.commit("srv")


def test_sockets_are_listed_with_their_jobs(zsupd_factory, tmp_path):
    import subprocess

    from conftest import ROOT

    d = zsupd_factory(config(tmp_path))
    rows = {r["name"]: r for r in d.call("sockets")}
    assert rows["web"]["bind"] == f"unix:{tmp_path}/web.sock" and rows["web"]["backlog"] == 512
    assert rows["web"]["jobs"] == rows["other"]["jobs"] == ["default.web"]
    out = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "--state-dir", d.state_dir, "sockets"],
                         capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if k not in ("ZSUP_BUS", "ZSUP_PUB")}
                         | {"PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert f"web\tunix:{tmp_path}/web.sock\tfd {rows['web']['fd']}\tdefault.web" in out.stdout.splitlines()
