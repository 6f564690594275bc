"""systemd's notify protocol (sd_notify), written with the standard library (docs/systemd.md).

A message is one datagram of `KEY=VALUE` lines sent to the unix socket named by
$NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). zsupd sends:
  - `READY=1` with `STATUS=` once the config's jobs are loaded and the bus listens;
  - `RELOADING=1` (with `MONOTONIC_USEC=`) before a reload (SIGHUP), `READY=1` after it;
  - `STOPPING=1` when it starts to stop its jobs;
  - `WATCHDOG=1` every half `WATCHDOG_USEC`, only while the supervisor loop answers: a stuck
    supervisor stops the pings and systemd restarts zsupd (`WatchdogSec=` in the unit);
  - `STATUS=` again whenever the summary changes (checked with each ping, every few seconds).
Without $NOTIFY_SOCKET every call is a no-op. The variables are taken out of zsupd's
environment at start, so the jobs it runs do not inherit them (a job's own sd_notify would
otherwise speak for zsupd).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("zsupd")

#: How often the status line is refreshed when no watchdog asks for more.
STATUS_EVERY = 5.0


def socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an address for `sendto`; `@name` is Linux's abstract namespace."""
    if not value or value[0] not in "/@":
        return None  # systemd also allows vsock: addresses; zsupd does not speak them
    if value[0] == "@":
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: dict) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is
    asked for this process (WATCHDOG_PID, when set, must be ours)."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Sends notify messages; `start(summary)` runs the watchdog/status thread, where
    `summary()` returns the status line or raises when the supervisor does not answer."""

    def __init__(self, environ: dict | None = None):
        environ = os.environ if environ is None else environ
        self.address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval(environ) if self.address else None
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            environ.pop(key, None)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of KEY=VALUE lines; False (and one log line) when it cannot be sent."""
        if self.address is None:
            return False
        data = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
                return True
            except OSError as exc:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                return False

    def ready(self, status: str) -> None:
        self._status = status
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                  STATUS="reloading the configuration")

    def stopping(self) -> None:
        self._stop.set()
        self.send(STOPPING=1, STATUS="stopping")

    def start(self, summary: Callable[[], str]) -> None:
        if self.address is None:
            return
        self._thread = threading.Thread(target=self._run, args=(summary,), name="zsup-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _run(self, summary: Callable[[], str]) -> None:
        every = min(self.watchdog or STATUS_EVERY, STATUS_EVERY)
        while not self._stop.wait(every):
            try:
                status = summary()  # blocks while the supervisor is stuck: no ping then
            except Exception as exc:  # noqa: BLE001 - a missed ping is the signal
                log.warning("supervisor did not answer (%s): no watchdog ping", exc)
                continue
            fields: dict[str, str | int] = {}
            if self.watchdog:
                fields["WATCHDOG"] = 1
            if status != self._status:
                fields["STATUS"] = self._status = status
            if fields and not self._stop.is_set():
                self.send(**fields)


def summary(rows: list[dict], is_internal: Callable[[str], bool]) -> str:
    """The STATUS= line from the `status` rows: jobs, processes running of wanted, trouble."""
    rows = [r for r in rows if not is_internal(r["job"])]
    running = sum(r["running"] for r in rows)
    wanted = sum(r["numprocesses"] for r in rows if r["active"])
    trouble = [f"{r['job']} {r['state']}" for r in rows if r["state"] in ("failing", "flapping", "failed")]
    line = f"{len(rows)} jobs, {running}/{wanted} processes running"
    if trouble:
        line += "; " + ", ".join(trouble[:5]) + (f" and {len(trouble) - 5} more" if len(trouble) > 5 else "")
    return line
