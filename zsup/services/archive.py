"""Fetch an archive over HTTP(S) and unpack it safely: the remote agent's untrusted input.

The agent (zsup/agent.py) is given a URL by whoever can reach its API and runs what the
archive holds, so everything here treats the server and the archive as hostile. The public
API is two calls, each run from the agent's worker thread, never the bus's control thread:

- `fetch(url, path, max_bytes, cancelled, deadline=, charge=)`: only http:// and https://
  (redirects included: no ftp), a timeout per read (`DOWNLOAD_TIMEOUT`) so a silent server
  is noticed, an overall `deadline` (`DOWNLOAD_DEADLINE` by default) so a server that trickles
  a byte now and then cannot hold the worker either, and a size limit checked twice: against
  Content-Length up front (refuse early) and while reading (a server can lie or send no
  length). The deadline is kept by a watchdog thread (one per download, polling 5 times a
  second) that shuts the connection's sockets down: that ends a read blocked anywhere, even
  in the middle of the response head, and a delete (`cancelled`) ends it the same way.
- `unpack(archive_path, target_dir, max_bytes, cancelled, charge=)`: tar (plain, gz, bz2,
  xz) or zip, returning the folder holding the Procfile (`target_dir`, or its one top folder).

Both call `charge(n)` before writing each chunk of n bytes: the agent's disk budget across
all apps, which raises to stop the setup (its exception goes through unchanged).

Both raise `ArchiveError`, whose message is the failure reason the agent records, and
`Cancelled` once `cancelled` is set (the process was deleted meanwhile); both check it at
every chunk or member, so a delete is noticed quickly.

Why the unpacking checks are what they are. Members are checked one by one, tar and zip
alike, without relying on tarfile's extraction filters (they differ across Python versions,
and zip has none):

- No path may leave the target: no absolute path (nor a Windows drive), no `..`, no NUL;
  otherwise an archive could overwrite any file the daemon's user can write.
- Nothing is written through a link: every member's folder must resolve (realpath) inside
  the target, a member is never opened through an existing link (O_NOFOLLOW), and a link
  never replaces another member; otherwise a link member followed by a file member of the
  same path writes outside.
- No link leads out: symbolic links are made last, each checked when made (its folder and
  its target, resolved with realpath), and every link is checked again once all are made,
  since a later link can change what an earlier one resolves to. Absolute link targets are
  refused outright. A tar hard link is copied from an earlier member rather than made, as a
  hard link could reach a file outside through the same inode.
- Size limits: at most `MAX_MEMBERS` members and `max_bytes` bytes in all, counted while
  writing rather than read from headers (which an archive can fake): a small archive cannot
  fill the disk (a "zip bomb") or exhaust inodes.
- Devices, FIFOs and other special files are refused: an app needs none, and a device node
  would give access to hardware or kernel memory, a FIFO could block the worker.

Modes keep only the 0o755 bits (no setuid, setgid or sticky bit, nothing world-writable),
and files are always readable and writable by their owner. A later member of the same name
replaces an earlier file, as with tar. On failure the caller removes the partly unpacked
tree; nothing here is written outside `target_dir`.

The heavy imports (urllib.request, which loads ssl, tarfile, zipfile) live here only, and the
agent imports this module when a set-up starts, so zsupd's start does not pay for them.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from typing import BinaryIO, Callable

__all__ = ["ArchiveError", "Cancelled", "fetch", "unpack", "DOWNLOAD_DEADLINE", "DOWNLOAD_TIMEOUT",
           "MAX_MEMBERS"]

DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_DEADLINE = 300.0
MAX_MEMBERS = 10000
CHUNK = 64 * 1024


def _free(n: int) -> None:
    """The default `charge`: no budget."""


class ArchiveError(Exception):
    """Fetching or unpacking failed; the message is the reason the agent records."""


class Cancelled(Exception):
    """The `cancelled` flag was set while fetching or unpacking."""


class _Watchdog:
    """Shuts down every socket of one download once `deadline` seconds have passed or
    `cancelled` is set; `expired` / `cancelled` then say why the reads failed."""

    def __init__(self, deadline: float, cancelled: threading.Event):
        self.deadline = deadline
        self.cancelled = cancelled
        self.expired = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="zsup-agent-deadline", daemon=True)

    def add(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            fired = self.expired or self.cancelled.is_set()
        if fired:
            self._shut(sock)

    def _run(self) -> None:
        end = time.monotonic() + self.deadline
        while not self.done.wait(0.2):
            if self.cancelled.is_set() or time.monotonic() >= end:
                with self.lock:
                    self.expired = not self.cancelled.is_set()
                    sockets = list(self.sockets)
                for sock in sockets:
                    self._shut(sock)
                return

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            # the plain socket's shutdown, even for an SSLSocket: a blocked read then ends
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self) -> "_Watchdog":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib with every connection's socket handed to `watchdog`, and no ftp (a redirect
    could lead there)."""

    def watched(base):
        class Connection(base):
            def connect(self):
                super().connect()
                watchdog.add(self.sock)
        return Connection

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(watched(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

    class NoFTP(urllib.request.FTPHandler):
        def ftp_open(self, req):
            raise urllib.error.URLError("only http:// and https:// are supported")

    return urllib.request.build_opener(HTTP(), HTTPS(), NoFTP())


def fetch(url: str, path: str, max_bytes: int, cancelled: threading.Event,
          timeout: float = DOWNLOAD_TIMEOUT, deadline: float = DOWNLOAD_DEADLINE,
          charge: Callable[[int], None] = _free) -> None:
    """Download `url` (http or https) into the file `path`, at most `max_bytes` bytes, all
    of it within `deadline` seconds (and no read waiting more than `timeout`)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ArchiveError(f"source_url: only http:// and https:// URLs are supported, not {url!r}")
    limit = max_bytes
    request = urllib.request.Request(url, headers={"User-Agent": "zsup-agent"})
    with _Watchdog(deadline, cancelled) as watchdog:
        try:
            _download(_opener(watchdog), request, path, limit, cancelled, timeout, charge)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            if cancelled.is_set():
                raise Cancelled() from None
            if watchdog.expired:
                raise ArchiveError(f"download: not finished within {deadline:g} s") from None
            if isinstance(exc, urllib.error.HTTPError):
                raise ArchiveError(f"download: {url} answered {exc.code} {exc.reason}") from None
            if isinstance(exc, urllib.error.URLError):
                raise ArchiveError(f"download: cannot fetch {url}: {exc.reason}") from None
            raise ArchiveError(f"download: cannot fetch {url}: {exc}") from None
        # A shut-down socket can also read as a clean end of file: never take that as done.
        if cancelled.is_set():
            raise Cancelled()
        if watchdog.expired:
            raise ArchiveError(f"download: not finished within {deadline:g} s")


def _download(opener, request, path: str, limit: int, cancelled: threading.Event, timeout: float,
              charge: Callable[[int], None]) -> None:
    with opener.open(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise ArchiveError(f"download: archive is {length} bytes, over the limit of {limit}")
        size = 0
        with open(path, "wb") as f:
            while True:
                if cancelled.is_set():
                    raise Cancelled()
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ArchiveError(f"download: archive over the limit of {limit} bytes")
                charge(len(chunk))
                f.write(chunk)


def unpack(archive_path: str, target_dir: str, max_bytes: int, cancelled: threading.Event,
           charge: Callable[[int], None] = _free) -> str:
    """Unpack into `target_dir` (created, must not exist); return the app's root (target_dir,
    or its one top folder), the folder holding the Procfile."""
    os.makedirs(target_dir, mode=0o700)
    unpacker = _Unpacker(target_dir, max_bytes, cancelled, charge)
    if zipfile.is_zipfile(archive_path):
        try:
            with zipfile.ZipFile(archive_path) as zf:
                unpacker.zip(zf)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
            raise ArchiveError(f"archive: bad zip file: {exc}") from None
    else:
        try:
            tf = tarfile.open(archive_path, "r:*")
        except (tarfile.TarError, OSError, EOFError):
            raise ArchiveError("archive: not an archive (expected tar, tar.gz, tar.bz2, tar.xz or zip)") from None
        try:
            with tf:
                unpacker.tar(tf)
        except (tarfile.TarError, OSError, EOFError, zipfile.error) as exc:
            raise ArchiveError(f"archive: bad tar file: {exc}") from None
    unpacker.finish()
    if os.path.isfile(os.path.join(target_dir, "Procfile")):
        return target_dir
    entries = os.listdir(target_dir)
    if len(entries) == 1:
        only = os.path.join(target_dir, entries[0])
        if os.path.isdir(only) and not os.path.islink(only) and os.path.isfile(os.path.join(only, "Procfile")):
            return only
    raise ArchiveError("archive: no Procfile at its root")


class _Unpacker:
    """Writes archive members into `target`, checking each (see the module docstring)."""

    def __init__(self, target: str, limit: int, cancelled: threading.Event, charge: Callable[[int], None]):
        self.target = os.path.realpath(target)
        self.limit = limit
        self.cancelled = cancelled
        self.charge = charge
        self.total = 0
        self.count = 0
        self.links: list[tuple[str, str]] = []  # (relative path, link target), made last
        self.files: set[str] = set()

    # -- paths
    def relative(self, name: str) -> str:
        clean = name.replace("\\", "/")
        if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
            raise ArchiveError(f"archive: absolute path {name!r}")
        parts = [p for p in clean.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ArchiveError(f"archive: path {name!r} leaves the folder")
        if any("\0" in p for p in parts):
            raise ArchiveError(f"archive: bad path {name!r}")
        return "/".join(parts)

    def inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.target or real.startswith(self.target + os.sep)

    def dest(self, rel: str) -> str:
        """Where a member goes: its folder must resolve inside, and it must not be a link."""
        path = os.path.join(self.target, rel)
        if not self.inside(os.path.dirname(path)):
            raise ArchiveError(f"archive: {rel!r} would be written through a link")
        if os.path.islink(path):
            raise ArchiveError(f"archive: {rel!r} would be written through a link")
        return path

    def counted(self) -> None:
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise ArchiveError(f"archive: more than {MAX_MEMBERS} members")
        if self.cancelled.is_set():
            raise Cancelled()

    # -- writing
    def mkdir(self, rel: str) -> None:
        if not rel:
            return
        path = self.dest(rel)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ArchiveError(f"archive: {rel!r} is both a file and a folder")
        os.makedirs(path, mode=0o755, exist_ok=True)
        if not self.inside(path):
            raise ArchiveError(f"archive: {rel!r} leaves the folder")

    def write(self, rel: str, source: BinaryIO, mode: int) -> None:
        if not rel:
            raise ArchiveError("archive: a file without a name")
        parent = os.path.dirname(rel)
        if parent:
            self.mkdir(parent)
        path = self.dest(rel)
        if os.path.isdir(path):
            raise ArchiveError(f"archive: {rel!r} is both a folder and a file")
        if os.path.lexists(path):
            os.unlink(path)  # a later member of the same name wins, as with tar
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                self.total += len(chunk)
                if self.total > self.limit:
                    raise ArchiveError(f"archive: unpacked size over the limit of {self.limit} bytes")
                self.charge(len(chunk))
                f.write(chunk)
        os.chmod(path, (mode & 0o755) | 0o600)
        self.files.add(rel)

    def link(self, rel: str, target: str) -> None:
        if not rel:
            raise ArchiveError("archive: a link without a name")
        if not target or target.startswith("/") or "\0" in target:
            raise ArchiveError(f"archive: link {rel!r} points outside the folder ({target!r})")
        self.links.append((rel, target))

    def finish(self) -> None:
        """Make the links, each checked when made and all checked again at the end."""
        for rel, target in self.links:
            parent = os.path.dirname(rel)
            if parent:
                self.mkdir(parent)
            path = self.dest(rel)
            if os.path.lexists(path):
                raise ArchiveError(f"archive: link {rel!r} would replace another member")
            if not self.inside(os.path.join(os.path.dirname(path), target)):
                raise ArchiveError(f"archive: link {rel!r} points outside the folder ({target!r})")
            os.symlink(target, path)
            if not self.inside(path):
                raise ArchiveError(f"archive: link {rel!r} points outside the folder ({target!r})")
        for rel, target in self.links:
            if not self.inside(os.path.join(self.target, rel)):
                raise ArchiveError(f"archive: link {rel!r} points outside the folder ({target!r})")

    # -- formats
    def tar(self, tf: tarfile.TarFile) -> None:
        while True:
            member = tf.next()
            if member is None:
                break
            self.counted()
            rel = self.relative(member.name)
            if member.isdir():
                self.mkdir(rel)
            elif member.isreg():
                source = tf.extractfile(member)
                with source:
                    self.write(rel, source, member.mode)
            elif member.issym():
                self.link(rel, member.linkname)
            elif member.islnk():
                # A hard link names an earlier member: copy it (a hard link could reach a
                # file outside through the same inode otherwise).
                other = self.relative(member.linkname)
                if other not in self.files:
                    raise ArchiveError(f"archive: hard link {rel!r} to {member.linkname!r}, not an earlier file")
                with open(os.path.join(self.target, other), "rb") as source:
                    self.write(rel, source, member.mode)
            else:
                raise ArchiveError(f"archive: {rel or member.name!r} is a device, FIFO or other special file")

    def zip(self, zf: zipfile.ZipFile) -> None:
        for info in zf.infolist():
            self.counted()
            rel = self.relative(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                self.mkdir(rel)
            elif kind == stat.S_IFLNK:
                if info.file_size > 4096:
                    raise ArchiveError(f"archive: link {rel!r} has an over-long target")
                with zf.open(info) as source:
                    self.link(rel, source.read(4097).decode("utf-8", "replace"))
            elif kind in (0, stat.S_IFREG):
                with zf.open(info) as source:
                    self.write(rel, source, mode or 0o644)
            else:
                raise ArchiveError(f"archive: {rel!r} is a device, FIFO or other special file")
