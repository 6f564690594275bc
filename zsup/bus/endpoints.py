"""Checking and preparing the addresses the bus binds to, before any socket exists.

Kept apart from the server so the security rules read in one place: an ipc socket lives in an
owner-only directory and is itself owner-only; a tcp socket needs CURVE unless it is plain
loopback and the operator said `insecure` in so many words.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass

from zsup.errors import Conflict, ZsupError

SUPPORTED_TRANSPORTS = ("ipc", "tcp")


@dataclass(frozen=True)
class Endpoint:
    """A parsed bus address: `ipc://PATH` or `tcp://HOST:PORT`."""

    url: str
    transport: str
    address: str  # what follows "transport://"

    @property
    def path(self) -> str | None:
        """The socket file of an ipc endpoint (None for abstract `ipc://@name` and for tcp)."""
        if self.transport != "ipc" or self.address.startswith("@"):
            return None
        return os.path.abspath(self.address)

    @property
    def host(self) -> str | None:
        """The host part of a tcp endpoint, without IPv6 brackets."""
        if self.transport != "tcp":
            return None
        host = self.address.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def parse_endpoint(url: str) -> Endpoint:
    """Parse and check the form of an endpoint; ZsupError with the reason if it is not usable."""
    if not isinstance(url, str) or "://" not in url:
        raise ZsupError(f"bad bus endpoint {url!r}: expected ipc://PATH or tcp://HOST:PORT")
    transport, _, address = url.partition("://")
    if transport not in SUPPORTED_TRANSPORTS:
        raise ZsupError(f"bad bus endpoint {url!r}: transport {transport!r} is not supported (ipc, tcp)")
    if not address:
        raise ZsupError(f"bad bus endpoint {url!r}: no address")
    if transport == "tcp":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not (port == "*" or port.isdigit()):
            raise ZsupError(f"bad bus endpoint {url!r}: expected tcp://HOST:PORT")
    return Endpoint(url, transport, address)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a wildcard or an interface name is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tcp_security(endpoints: list[Endpoint], curve: dict | None) -> bool:
    """Decide whether tcp endpoints use CURVE; raise if they may not be bound at all.

    Returns True when there are tcp endpoints and CURVE keys for them (all of them use CURVE).
    Without keys, tcp is allowed only on loopback and only with `{"insecure": True}`: anyone
    who can open a TCP connection could otherwise run any command as the daemon's user.
    """
    tcp = [ep for ep in endpoints if ep.transport == "tcp"]
    if not tcp:
        return False
    if curve and curve.get("secret_key"):
        return True
    insecure = bool(curve and curve.get("insecure"))
    for ep in tcp:
        if not insecure:
            raise ZsupError(
                f"refusing to bind {ep.url} without CURVE keys: a tcp bus needs "
                "curve={'secret_key', 'public_key', 'authorized_keys_dir'} "
                "(or {'insecure': True} on a loopback address)")
        if not is_loopback(ep.host or ""):
            raise ZsupError(
                f"refusing to bind {ep.url} without CURVE keys: 'insecure' is allowed on "
                "loopback addresses only (127.0.0.1, ::1, localhost)")
    return False


def prepare_ipc_path(path: str) -> None:
    """Make the socket's directory (0700) if missing and clear a stale socket file.

    libzmq silently unlinks an existing file when it binds, which would steal the address of a
    live daemon; so a file that is there must be a socket nobody listens on any more.
    Connecting a plain AF_UNIX socket tells: it is refused when nobody listens, it succeeds
    while a server is alive, even one too busy or hung to answer a `ping` (which a timed ping
    would wrongly call stale), and it works for the command and the PUB socket alike.
    """
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)  # makedirs' mode goes through the umask; be exact
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ZsupError(f"cannot bind ipc://{path}: the path exists and is not a socket")
    if _someone_listens(path):
        raise Conflict(f"another server is listening on ipc://{path} (is zsupd already running?)")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except (TimeoutError, BlockingIOError):
        return True  # a full accept queue: alive, just busy
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        # EACCES and the like: we cannot tell, so we must not remove it.
        raise ZsupError(f"cannot check ipc://{path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
