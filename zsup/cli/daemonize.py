"""What every zsup server does the same way: detach into the background, keep a pid file,
log to a bounded file or to standard error."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Iterator


def daemonize() -> None:
    """Classic double fork: the daemon is no session leader and never gets a terminal back."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Write our pid to `path` (if any) for the duration of the block, then remove it."""
    if path:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def setup_logging(verbose: int, log_file: str | None) -> None:
    """A server's own log: INFO (normal operation) by default, -q WARNING, -v DEBUG."""
    from zsup.cli.options import log_level

    level = log_level(verbose)
    if log_file:
        # a server's own log follows the rules of the jobs' logs: bounded, rotated, reopenable
        from logging.handlers import RotatingFileHandler  # only for a log file

        handler = RotatingFileHandler(log_file, maxBytes=10_000_000, backupCount=10)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: a server's main thread waits on it, then stops."""
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
