"""Shared listening sockets: `[socket:NAME]` sections (issue 16).

zsupd binds each socket itself, at start, and keeps it open for as long as the config has it
unchanged: across restarts of the jobs that use it (the kernel queues connections while no
process accepts, so a restart refuses none) and across `reload`. A job lists them in
`sockets = NAME, ...`; zsup/core/process.py passes them to its processes from fd 3 on, under
systemd's socket-activation protocol (docs/config.md, "Shared sockets").

Thread rule: `apply` and `close` run in zsupd's control thread (start, reload, stop); the
supervisor loop reads only the name -> fd mapping given to the manager, swapped whole.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from dataclasses import dataclass

from zsup.core.jobspec import check_name, to_bool, to_number
from zsup.errors import BadRequest, Conflict, Forbidden, NotFound

KEYS = ("bind", "backlog", "reuseport", "mode", "owner", "family")
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


@dataclass(frozen=True)
class SocketSpec:
    name: str
    bind: str
    backlog: int = 128
    reuseport: bool = False
    mode: int | None = None  # unix sockets: the file's permissions
    family: str = "inet"  # inet, inet6 or unix: from `bind` unless given
    owner: tuple[int, int] | None = None  # unix sockets: the file's (uid, gid); -1 keeps one

    @property
    def unix_path(self) -> str | None:
        return self.bind[5:] if self.bind.startswith("unix:") else None

    def to_dict(self) -> dict:
        """The section's keys, in the form `parse_socket` takes back (JSON, the store)."""
        out = {"bind": self.bind, "backlog": self.backlog, "reuseport": self.reuseport, "family": self.family}
        if self.mode is not None:
            out["mode"] = f"{self.mode:o}"
        if self.owner is not None:
            out["owner"] = f"{self.owner[0]}:{self.owner[1]}" if self.owner[1] != -1 else str(self.owner[0])
        return out


def parse_socket(name: str, section: dict) -> SocketSpec:
    """Check one [socket:NAME] section; BadRequest naming the key."""
    check_name("name", name)
    for key in section:
        if key not in KEYS:
            raise BadRequest(f"{key}: unknown key (expected {', '.join(KEYS)})")
    bind = section.get("bind")
    if not isinstance(bind, str) or not bind.strip():
        raise BadRequest("bind: required: HOST:PORT or unix:PATH")
    bind = bind.strip()
    if "\0" in bind:
        raise BadRequest("bind: NUL character not allowed")
    if not bind.startswith("unix:"):
        _address(bind)
    elif len(bind) == 5:
        raise BadRequest("bind: unix: needs a path")
    family = _family(bind, section.get("family"))
    mode = section.get("mode")
    if mode not in (None, ""):
        if bind[:5] != "unix:":
            raise BadRequest("mode: only for a unix socket")
        try:
            mode = int(str(mode), 8)
            if not 0 <= mode <= 0o777:
                raise ValueError
        except ValueError:
            raise BadRequest(f"mode: expected octal permissions such as 660, got {section.get('mode')!r}") from None
    else:
        mode = None
    return SocketSpec(name=name, bind=bind,
                      backlog=to_number("backlog", section.get("backlog", 128), int, 1, maximum=65535),
                      reuseport=to_bool("reuseport", section.get("reuseport", False)), mode=mode,
                      family=family, owner=_owner(section.get("owner"), bind))


def _family(bind: str, given) -> str:
    """inet, inet6 or unix: what `bind` says; a `family` given must agree with it (a host name
    or `:PORT` may be either inet or inet6)."""
    if bind.startswith("unix:"):
        inferred = "unix"
    else:
        host = bind.rpartition(":")[0]
        inferred = "inet6" if host.startswith("[") else "inet"
    if given in (None, ""):
        return inferred
    if not isinstance(given, str) or given.strip().lower() not in FAMILIES:
        raise BadRequest(f"family: expected inet, inet6 or unix, got {given!r}")
    given = given.strip().lower()
    if given != inferred and not (given == "inet6" and inferred == "inet" and not _is_ipv4(bind)):
        raise BadRequest(f"family: {given} does not match bind {bind!r} ({inferred})")
    return given


def _is_ipv4(bind: str) -> bool:
    try:
        socket.inet_aton(bind.rpartition(":")[0])
        return True
    except OSError:
        return False


def _owner(value, bind: str) -> tuple[int, int] | None:
    """`user[:group]` (names or numbers) of a unix socket's file: (uid, gid or -1)."""
    if value in (None, ""):
        return None
    if not bind.startswith("unix:"):
        raise BadRequest("owner: only for a unix socket")
    if not isinstance(value, str):
        raise BadRequest(f"owner: expected user[:group], got {value!r}")
    user, _, group = value.strip().partition(":")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise BadRequest(f"owner: unknown user {user!r}") from None
    try:
        gid = -1 if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise BadRequest(f"owner: unknown group {group!r}") from None
    if os.geteuid() != 0 and (uid != os.geteuid() or gid not in (-1, *os.getgroups(), os.getegid())):
        raise BadRequest(f"owner: only root may give a socket to {value!r}")
    return uid, gid


def _address(bind: str, family: str = "") -> tuple[int, tuple]:
    host, colon, port = bind.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadRequest(f"bind: expected HOST:PORT or unix:PATH, got {bind!r}")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    if family == "inet6":
        return socket.AF_INET6, (host or "::", int(port))
    return socket.AF_INET, (host or "0.0.0.0", int(port))


def _bind(spec: SocketSpec) -> socket.socket:
    path = spec.unix_path
    family, address = (socket.AF_UNIX, path) if path else _address(spec.bind, spec.family)
    sock = socket.socket(family, socket.SOCK_STREAM)  # not inheritable: passed by dup2 only
    try:
        if path:
            try:  # a socket file left by a previous run; anything else is not ours to remove
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if path:
            _set_file(spec)
        sock.listen(spec.backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _where(sock: socket.socket) -> str:
    """Where a socket listens, its port resolved (`bind = 127.0.0.1:0` picks one)."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    return f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"


def _set_file(spec: SocketSpec) -> None:
    """A unix socket file's `mode` and `owner`, as the spec says."""
    if spec.owner is not None:
        os.chown(spec.unix_path, *spec.owner)
    if spec.mode is not None:
        os.chmod(spec.unix_path, spec.mode)


class Sockets:
    """The bound sockets, by name: the config file's, and those added over the bus (`runtime`;
    zsup/daemon/socket_commands.py), which a reload keeps unless the file now has the name."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[SocketSpec, socket.socket]] = {}
        self.runtime: dict[str, SocketSpec] = {}

    def apply(self, specs: list[SocketSpec]) -> list[socket.socket]:
        """Bind what is new or changed, keep what is unchanged. All or nothing: OSError (with
        the socket's name in the message) if one cannot be bound, nothing changed then.
        Returns the sockets no longer wanted: close them (`close_stale`) once the jobs using
        them were updated."""
        in_file = {spec.name for spec in specs}
        specs = list(specs) + [spec for name, spec in self.runtime.items() if name not in in_file]
        new: dict[str, tuple[SocketSpec, socket.socket]] = {}
        try:
            for spec in specs:
                old = self._open.get(spec.name)
                if old is not None and (old[0].bind, old[0].reuseport, old[0].family) == \
                        (spec.bind, spec.reuseport, spec.family):
                    # same address: keep the socket (and its queued connections), set the rest
                    if spec.backlog != old[0].backlog:
                        old[1].listen(spec.backlog)
                    if spec.unix_path and (spec.mode, spec.owner) != (old[0].mode, old[0].owner):
                        _set_file(spec)
                    new[spec.name] = (spec, old[1])
                    continue
                try:
                    new[spec.name] = (spec, _bind(spec))
                except OSError as exc:
                    raise OSError(exc.errno, f"[socket:{spec.name}] bind {spec.bind}: {exc.strerror or exc}") from None
        except OSError:
            for name, (_, sock) in new.items():
                if self._open.get(name, (None, None))[1] is not sock:
                    sock.close()
            raise
        stale = [sock for name, (_, sock) in self._open.items() if new.get(name, (None, None))[1] is not sock]
        self._open = new
        self.runtime = {name: spec for name, spec in self.runtime.items() if name not in in_file}  # the file wins
        return stale

    def add(self, spec: SocketSpec, manager) -> dict:
        """Bind one socket at run time and give it to the manager (control thread). Conflict if
        the name is taken or the address cannot be bound; nothing changed then."""
        if spec.name in self._open:
            raise Conflict(f"name: socket {spec.name!r} exists")
        try:
            sock = _bind(spec)
        except OSError as exc:
            raise Conflict(f"bind: cannot bind {spec.bind}: {exc.strerror or exc}") from None
        self._open[spec.name] = (spec, sock)
        self.runtime[spec.name] = spec
        manager.socket_fds = self.fds()
        return next(row for row in self.info() if row["name"] == spec.name)

    def remove(self, name: str, manager) -> None:
        """Close a socket added at run time (control thread): NotFound, or Forbidden for one of
        the config file. The caller checks first that no loaded job lists it."""
        if name not in self._open:
            raise NotFound(f"no socket {name}")
        if name not in self.runtime:
            raise Forbidden(f"socket {name} is defined in the config file: remove its [socket:{name}] section")
        _, sock = self._open.pop(name)
        del self.runtime[name]
        manager.socket_fds = self.fds()
        self.close_stale([sock])

    @classmethod
    def open(cls, specs: list[SocketSpec], manager, path: str) -> "Sockets":
        """Bind a config's sockets at zsupd's start and hand them to the manager."""
        sockets = cls()
        sockets.apply_to(specs, manager, path)
        return sockets

    def apply_to(self, specs: list[SocketSpec], manager, path: str) -> list[socket.socket]:
        """`apply`, then give the manager the new name -> fd mapping. ConfigError (naming the
        config file and the section) if a socket cannot be bound; nothing changed then."""
        from zsup.daemon.config import ConfigError  # config imports this module

        try:
            stale = self.apply(specs)
        except OSError as exc:
            section, _, reason = exc.strerror.partition("] ")
            raise ConfigError.at(path, reason, section[1:], None) from None
        manager.socket_fds = self.fds()
        return stale

    def fds(self) -> dict[str, int]:
        return {name: sock.fileno() for name, (_, sock) in self._open.items()}

    def info(self) -> list[dict]:
        return [{"name": name, "bind": spec.bind, "fd": sock.fileno(), "backlog": spec.backlog,
                 "family": spec.family, "reuseport": spec.reuseport,
                 "origin": "runtime" if name in self.runtime else "file", "address": _where(sock)}
                for name, (spec, sock) in self._open.items()]

    def close_stale(self, socks: list[socket.socket]) -> None:
        kept = {spec.unix_path for spec, _ in self._open.values()}
        for sock in socks:
            path = sock.getsockname() if sock.family == socket.AF_UNIX else None
            sock.close()
            if path and path not in kept:  # a new socket may be bound at the same path
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def close(self) -> None:
        socks, self._open = [sock for _, sock in self._open.values()], {}
        self.close_stale(socks)
