"""`[socket:NAME]` keys `owner` and `family` (issue 16), with real sockets: the unix socket's
file as os.stat sees it, an IPv6 server on ::1, and one-line errors for bad values."""

import os
import pwd
import socket
import stat
import sys

import pytest
from conftest import wait_for

from zsup.daemon.config import ConfigError, parse_config
from zsup.daemon.sockets import Sockets, parse_socket
from zsup.errors import BadRequest

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


@ROOT_ONLY
def test_unix_socket_owner_and_mode(tmp_path):
    nobody = pwd.getpwnam("nobody")
    path = tmp_path / "web.sock"
    sockets = Sockets()
    try:
        sockets.apply([parse_socket("web", {"bind": f"unix:{path}", "owner": f"nobody:{nobody.pw_gid}",
                                            "mode": "640"})])
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        # a reload that only changes the owner keeps the socket (same inode) and re-owns it
        inode = st.st_ino
        sockets.apply([parse_socket("web", {"bind": f"unix:{path}", "owner": "root", "mode": "600"})])
        st = os.stat(path)
        assert st.st_ino == inode and st.st_uid == 0 and st.st_gid == nobody.pw_gid
        assert stat.S_IMODE(st.st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        sockets.close()
    assert not path.exists()


def test_inet6_socket_served_on_loopback(manager, recorder):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    sockets = Sockets()
    try:
        try:
            sockets.apply([parse_socket("v6", {"bind": "[::1]:0"})])
        except OSError as exc:
            pytest.skip(f"no ::1 here: {exc}")
        manager.socket_fds = sockets.fds()
        assert sockets.info()[0]["family"] == "inet6"
        fd = sockets.fds()["v6"]
        port = socket.socket(fileno=os.dup(fd)).getsockname()[1]
        server = ("import socket, sys\ns = socket.socket(fileno=3)\nc, a = s.accept()\n"
                  "c.sendall(repr(s.family).encode() + b' ' + a[0].encode() + b'\\n')\nc.close()\n")
        manager.load({"name": "v6", "cmd": sys.executable, "args": ["-c", server], "sockets": "v6",
                      "restart": "never"})
        with socket.create_connection(("::1", port), timeout=5) as client:
            client.settimeout(5)
            assert client.recv(100) == b"<AddressFamily.AF_INET6: 10> ::1\n"
        wait_for(lambda: recorder.find(".v6.reap"))
    finally:
        sockets.close()


def test_family_inferred_or_given():
    assert parse_socket("a", {"bind": "127.0.0.1:80"}).family == "inet"
    assert parse_socket("a", {"bind": "[::]:80"}).family == "inet6"
    assert parse_socket("a", {"bind": "unix:/tmp/x.sock"}).family == "unix"
    assert parse_socket("a", {"bind": ":80", "family": "inet6"}).family == "inet6"
    assert parse_socket("a", {"bind": "localhost:80", "family": "INET6"}).family == "inet6"
    spec = parse_socket("a", {"bind": "unix:/tmp/x.sock", "owner": "0:0", "mode": "660"})
    assert parse_socket("a", spec.to_dict()) == spec


@pytest.mark.parametrize("section, words", [
    ({"bind": "127.0.0.1:80", "family": "inet6"}, "family: inet6 does not match bind '127.0.0.1:80' (inet)"),
    ({"bind": "[::1]:80", "family": "inet"}, "family: inet does not match"),
    ({"bind": "unix:/tmp/x", "family": "inet"}, "family: inet does not match"),
    ({"bind": "127.0.0.1:80", "family": "ipx"}, "family: expected inet, inet6 or unix, got 'ipx'"),
    ({"bind": "127.0.0.1:80", "owner": "root"}, "owner: only for a unix socket"),
    ({"bind": "unix:/tmp/x", "owner": "no-such-user-zz"}, "owner: unknown user 'no-such-user-zz'"),
    ({"bind": "unix:/tmp/x", "owner": "root:no-such-group-zz"}, "owner: unknown group 'no-such-group-zz'"),
])
def test_bad_keys_are_one_line_errors(section, words):
    with pytest.raises(BadRequest) as info:
        parse_socket("a", section)
    assert words in str(info.value)
    text = "".join(f"{k} = {v}\n" for k, v in section.items())
    with pytest.raises(ConfigError) as info:
        parse_config(f"[socket:a]\n{text}")
    assert "\n" not in str(info.value) and "[socket:a]" in str(info.value) and words in str(info.value)
