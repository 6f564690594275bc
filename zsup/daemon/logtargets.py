"""Job output to the journal or to syslog instead of log files (`[zsup] log_target`,
docs/logs.md).

`LogTarget.write` is called on the manager's IO thread with a batch of whole lines of one
stream; it only queues them. The target's own thread sends one entry per line: to journald
with the native protocol (zsup.daemon.journal), fields MESSAGE, PRIORITY, SYSLOG_IDENTIFIER
(the job), ZSUP_JOB, ZSUP_PID (zsup's id), ZSUP_OS_PID, ZSUP_LABEL and ZSUP_SEQ; or to syslog
through logging.handlers.SysLogHandler, as `<PRI>JOB[OS_PID]: [LABEL pid=PID] LINE`.
stdout lines have priority info, stderr lines warning. The queue is bounded: when the
receiver cannot keep up, lines are dropped and counted (never a stall of the IO thread); a
failed send is counted as an error, logged once per episode.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import socket
import threading

from zsup.daemon.journal import JournalSender
from zsup.errors import BadRequest

log = logging.getLogger("zsupd")

#: batches (one stream's lines from one read) waiting for the target's thread
QUEUE_BATCHES = 10_000
#: the longest line sent whole; the rest of a longer one is cut (journald and syslog
#: daemons refuse or cut huge entries anyway)
MAX_LINE = 48 * 1024

_PRIORITY = {"stderr": logging.WARNING}
_JOURNAL_PRIORITY = {logging.INFO: 6, logging.WARNING: 4}


def syslog_address(value: str) -> str | tuple[str, int]:
    """`/dev/log` (a unix socket path) or `HOST:PORT` (UDP)."""
    if value.startswith("/"):
        return value
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected a socket path or HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def from_settings(settings: dict) -> "LogTarget | None":
    """The target `[zsup] log_target` asks for; None for `files` (the LogWriter's job)."""
    target = settings.get("log_target") or "files"
    if target == "files":
        return None
    try:
        return LogTarget(target, settings.get("journal_socket"), settings.get("syslog_address") or "/dev/log")
    except (OSError, ValueError) as exc:
        raise BadRequest(f"log_target = {target}: {exc}") from None


def settings_key(settings: dict) -> tuple:
    """What a reload compares to decide whether the target must be replaced."""
    return tuple(settings.get(k) for k in ("log_target", "journal_socket", "syslog_address"))


class _SysLog(logging.handlers.SysLogHandler):
    """SysLogHandler that reports a failed send to its caller instead of printing it."""

    failed: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        import sys

        self.failed = sys.exc_info()[1] or RuntimeError("syslog send failed")


class LogTarget:
    def __init__(self, target: str, journal_socket: str | None = None, address: str = "/dev/log"):
        if target not in ("journal", "syslog"):
            raise ValueError(f"unknown log target {target!r}")
        self.target = target
        self._queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self._thread: threading.Thread | None = None
        self.lines_sent = self.bytes_sent = self.errors = self.dropped = 0
        self._failing = False
        if target == "journal":
            self._journal = JournalSender(journal_socket or "/run/systemd/journal/socket")
        else:
            self._syslog = _SysLog(address=syslog_address(address), facility="daemon",
                                   socktype=socket.SOCK_DGRAM)
            self._syslog.append_nul = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"zsup-log-{self.target}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (within `timeout`), then close."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        if self.target == "journal":
            self._journal.close()
        else:
            self._syslog.close()

    def write(self, job: str, label: str, pid: int, os_pid: int, seq: int, data: bytes) -> None:
        """IO thread: queue one batch of lines; never blocks."""
        try:
            self._queue.put_nowait((job, label, pid, os_pid, seq, data))
        except queue.Full:
            self.dropped += data.count(b"\n") or 1  # one writer thread: no lock needed

    def stats(self) -> dict:
        return {"lines_sent": self.lines_sent, "bytes_sent": self.bytes_sent, "errors": self.errors,
                "dropped": self.dropped}

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, label, pid, os_pid, seq, data = item
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()  # the batch's last newline; a cut piece has none
            for n, line in enumerate(lines):
                try:
                    sent = self._send(job, label, pid, os_pid, seq + n, line[:MAX_LINE])
                except Exception as exc:  # noqa: BLE001 - counted and logged, the thread goes on
                    self.errors += 1
                    if not self._failing:
                        self._failing = True
                        log.error("log target %s: cannot send job output: %s (counting the lost lines)",
                                  self.target, exc)
                    continue
                if self._failing:
                    self._failing = False
                    log.info("log target %s: sending again", self.target)
                self.lines_sent += 1
                self.bytes_sent += sent

    def _send(self, job: str, label: str, pid: int, os_pid: int, seq: int, line: bytes) -> int:
        level = _PRIORITY.get(label, logging.INFO)
        if self.target == "journal":
            return self._journal.send({
                "MESSAGE": line, "PRIORITY": _JOURNAL_PRIORITY[level], "SYSLOG_IDENTIFIER": job,
                "ZSUP_JOB": job, "ZSUP_PID": pid, "ZSUP_OS_PID": os_pid, "ZSUP_LABEL": label, "ZSUP_SEQ": seq})
        text = f"{job}[{os_pid}]: [{label} pid={pid}] {line.decode('utf-8', 'replace')}"
        record = logging.makeLogRecord({"msg": text, "levelno": level, "levelname": logging.getLevelName(level)})
        self._syslog.failed = None
        self._syslog.emit(record)
        if self._syslog.failed is not None:
            raise self._syslog.failed
        return len(text)
