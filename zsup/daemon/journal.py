"""systemd-journald's native protocol, written with the standard library (docs/logs.md).

One entry is one datagram to journald's socket (/run/systemd/journal/socket): fields one
after another, `NAME=value\\n` when the value holds no newline, else `NAME\\n`, the value's
length as a little-endian 64-bit number, the value, and `\\n`. Names are upper-case letters,
digits and `_`, not starting with `_` (those are journald's own, trusted fields).
"""

from __future__ import annotations

import re
import socket
import struct
import threading

DEFAULT_SOCKET = "/run/systemd/journal/socket"
_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}\Z")


def encode_entry(fields: dict[str, str | bytes | int]) -> bytes:
    """One journal entry in the native protocol; ValueError on a name journald would refuse."""
    out = bytearray()
    for name, value in fields.items():
        if not _NAME.match(name):
            raise ValueError(f"bad journal field name {name!r}")
        if isinstance(value, int):
            value = str(value)
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        if b"\n" in raw:
            out += name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += name.encode() + b"=" + raw + b"\n"
    return bytes(out)


class JournalSender:
    """Sends entries to journald's socket. One caller thread at a time (the log target's);
    an error is raised to the caller, who counts it."""

    def __init__(self, address: str = DEFAULT_SOCKET, timeout: float = 1.0):
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)  # a stuck journald costs the target's thread, no more
        self._lock = threading.Lock()

    def send(self, fields: dict[str, str | bytes | int]) -> int:
        data = encode_entry(fields)
        with self._lock:
            self._sock.sendto(data, self.address)
        return len(data)

    def close(self) -> None:
        self._sock.close()
