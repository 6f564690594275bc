"""The protocol's value parsers: scale orders, signals and sizes, as users and clients write them.

Pure functions over plain values (no zmq, no sockets), so every layer may import them: the
core applies them, the daemon's config reads with them, clients check input before sending.
Each raises BadRequest with a message that names the argument.
"""

from __future__ import annotations

import re
import signal

from zsup.errors import BadRequest

__all__ = ["SCALE_TEXT", "parse_scale", "scale_order", "parse_signal", "signal_name", "parse_size"]

#: A scale order as text: "3", "+2", "-1", "=3" (a bare number sets the count).
SCALE_TEXT = re.compile(r"^[+=-]?[0-9]+$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_scale(current: int, n) -> int:
    """gaffer's scale argument: an int is relative; "+N"/"-N" relative, "=N" or "N" absolute.

    The result is never below 0."""
    if isinstance(n, bool):
        raise BadRequest(f"n: bad scale value {n!r}")
    if isinstance(n, int):
        target = current + n
    elif isinstance(n, str) and n.strip():
        text = n.strip()
        op, digits = (text[0], text[1:]) if text[0] in "+-=" else ("=", text)
        if not digits.isdigit():
            raise BadRequest(f"n: bad scale value {n!r} (use 3, +2, -1 or =3)")
        value = int(digits)
        target = {"+": current + value, "-": current - value, "=": value}[op]
    else:
        raise BadRequest(f"n: bad scale value {n!r} (use 3, +2, -1 or =3)")
    return max(0, target)


def scale_order(text: str) -> str | None:
    """A scale order typed by a person ("3", "+2", "-1", "=3") in the form the bus takes
    ("=3", "+2", "-1": explicit, since a bare integer on the bus is relative); None if it
    is not one."""
    text = text.strip()
    if not SCALE_TEXT.match(text):
        return None
    return text if text[0] in "+-=" else "=" + text


def parse_signal(value) -> int:
    """A signal as users write it: 9, "9", "KILL", "SIGKILL", "kill"; its number."""
    if isinstance(value, bool):
        raise BadRequest(f"bad signal: {value!r}")
    if isinstance(value, int):
        sig = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        sig = int(value.strip())
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise BadRequest(f"unknown signal: {value!r}") from None
    else:
        raise BadRequest(f"bad signal: {value!r}")
    if sig not in set(int(s) for s in signal.Signals):
        raise BadRequest(f"unknown signal number: {sig}")
    return sig


def signal_name(sig: int) -> str:
    """"SIGTERM" for 15; the number as text when it names no signal."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def parse_size(key: str, value) -> int:
    """A byte count: 1048576, 512k, 10M, 1GB (binary multiples)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise BadRequest(f"{key}: must be >= 0, got {value!r}")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise BadRequest(f"{key}: expected a size such as 10485760 or 10M, got {value!r}")
    unit = (m.group(2) or "b")[0].lower()
    return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
