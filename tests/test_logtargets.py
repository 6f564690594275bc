"""Job output to the journal (native protocol) or syslog, received on unix datagram sockets the
test binds, from a real zsupd (docs/logs.md)."""

import os
import socket
import struct
import sys

import pytest
from conftest import wait_for

from zsup.daemon.journal import encode_entry

SCRIPT = ("import sys\n"
          "print('hello', flush=True)\n"
          "print('caf\\u00e9 = two words', flush=True)\n"
          "print('oops', file=sys.stderr, flush=True)\n"
          "import time; time.sleep(300)\n")


def parse_entry(data):
    """The native protocol, read back (both field forms)."""
    fields, i = {}, 0
    while i < len(data):
        end = data.index(b"\n", i)
        head = data[i:end]
        if b"=" in head:
            name, _, value = head.partition(b"=")
            i = end + 1
        else:
            name = head
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            assert data[end + 9 + size:end + 10 + size] == b"\n"
            i = end + 10 + size
        fields[name.decode()] = value
    return fields


def bind(path):
    if len(path) > 100:
        pytest.skip("tmp path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    return sock


def receive(sock, count):
    got = []
    while len(got) < count:
        got.append(sock.recv(65536))
    return got


def job(tmp_path, extra=""):
    script = tmp_path / "talk.py"
    script.write_text(SCRIPT)
    return f"[process:talk]\ncmd = {sys.executable}\nargs = -u {script}\n{extra}"


def test_encode_entry_both_forms():
    data = encode_entry({"MESSAGE": "two\nlines", "PRIORITY": 6, "ZSUP_LABEL": b"stdout"})
    assert data == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\nPRIORITY=6\nZSUP_LABEL=stdout\n"
    assert parse_entry(data) == {"MESSAGE": b"two\nlines", "PRIORITY": b"6", "ZSUP_LABEL": b"stdout"}
    with pytest.raises(ValueError):
        encode_entry({"_PID": 1})  # journald's trusted fields are not ours to set
    with pytest.raises(ValueError):
        encode_entry({"lower": 1})


def test_job_output_to_the_journal(zsupd_factory, tmp_path):
    path = str(tmp_path / "journal.sock")
    sock = bind(path)
    try:
        d = zsupd_factory(f"[zsup]\nlog_target = journal\njournal_socket = {path}\n" + job(tmp_path))
        entries = [parse_entry(e) for e in receive(sock, 3)]
        pid = d.call("pids", name="talk")[0]
        os_pid = d.call("get_process", pid=pid)["os_pid"]
        by_message = {e["MESSAGE"]: e for e in entries}
        assert set(by_message) == {b"hello", "café = two words".encode(), b"oops"}
        hello = by_message[b"hello"]
        assert hello["ZSUP_JOB"] == hello["SYSLOG_IDENTIFIER"] == b"default.talk"
        assert hello["ZSUP_PID"] == str(pid).encode() and hello["ZSUP_OS_PID"] == str(os_pid).encode()
        assert hello["ZSUP_LABEL"] == b"stdout" and hello["PRIORITY"] == b"6" and hello["ZSUP_SEQ"] == b"1"
        assert by_message[b"oops"]["ZSUP_LABEL"] == b"stderr" and by_message[b"oops"]["PRIORITY"] == b"4"
        # no log files: the journal has the output
        assert not os.path.exists(os.path.join(d.state_dir, "logs", "default", "talk.stdout.log"))
        logs = os.listdir(os.path.join(d.state_dir, "logs")) if os.path.isdir(os.path.join(d.state_dir, "logs")) else []
        assert not any("talk" in name for name in logs), logs
        metrics = d.call("metrics")
        assert metrics["logs"]["lines_written"] >= 3 and metrics["logs"]["write_errors"] == 0
    finally:
        sock.close()


def test_job_output_to_syslog_and_a_receiver_that_goes_away(zsupd_factory, tmp_path):
    path = str(tmp_path / "syslog.sock")
    sock = bind(path)
    try:
        d = zsupd_factory(f"[zsup]\nlog_target = syslog\nsyslog_address = {path}\n" + job(tmp_path))
        got = sorted(m.decode() for m in receive(sock, 3))
        pid = d.call("pids", name="talk")[0]
        os_pid = d.call("get_process", pid=pid)["os_pid"]
        # facility daemon (3): info is <30>, warning <28>
        assert got == sorted([f"<30>default.talk[{os_pid}]: [stdout pid={pid}] hello",
                              f"<30>default.talk[{os_pid}]: [stdout pid={pid}] café = two words",
                              f"<28>default.talk[{os_pid}]: [stderr pid={pid}] oops"])
    finally:
        sock.close()
    os.unlink(path)
    # the receiver is gone: lines are counted as errors, zsupd goes on answering
    d.call("commit", name="talk")
    wait_for(lambda: d.call("metrics")["logs"]["write_errors"] >= 3, message="send errors counted")
    assert d.call("ping") == "pong"
    assert "cannot send job output" in d.log()


def test_bad_log_target_settings_are_refused(zsupd_factory, tmp_path):
    from zsup.daemon.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="log_target"):
        parse_config("[zsup]\nlog_target = console\n", "x.ini")
    with pytest.raises(ConfigError, match="syslog_address"):
        parse_config("[zsup]\nsyslog_address = nowhere\n", "x.ini")
    config = parse_config("[zsup]\nsyslog_address = 127.0.0.1:514\n", "x.ini")
    assert config.settings["syslog_address"] == "127.0.0.1:514" and config.settings["log_target"] == "files"
