"""Signal names and numbers as users write them: 9, "9", "KILL", "SIGKILL", "kill"."""

import signal

from zsup.errors import BadRequest


def parse_signal(value) -> int:
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
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
