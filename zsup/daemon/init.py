"""zsupd as a container's init (`zsupd --init`, or on its own when it runs as pid 1), and
`[zsup] exit_with = JOB` (docs/systemd.md, "Containers").

What tini and dumb-init do, zsupd does this way:
  - orphans: zsupd is always a child subreaper and reaps orphans that land on it once a
    second; as init it also reaps them as soon as SIGCHLD says one exited (a reaper thread
    woken by the signal hands the work to the supervisor thread);
  - SIGTERM and SIGINT stop every job gracefully (each job's stop_signal, SIGTERM unless the
    job says otherwise, then graceful_timeout and SIGKILL), then zsupd exits; SIGHUP still
    reloads the config and SIGUSR1 reopens the logs;
  - the exit status: with `exit_with = JOB`, zsupd stops everything and exits as soon as a
    process of JOB exits on its own, with that process's status (128 + N when signal N
    killed it); when zsupd is stopped, with the status of JOB's last process. Without
    `exit_with`, zsupd exits 0.
`exit_with` works outside init mode too (say, under tini, or in a test).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from zsup.core.jobspec import split_job_name

log = logging.getLogger("zsupd")


def exit_status(msg: dict) -> int:
    """A shell's view of a process's end: its exit code, or 128 + the killing signal."""
    if msg.get("term_signal"):
        return 128 + int(msg["term_signal"])
    code = msg.get("exit_code")
    return 0 if code is None else int(code) & 0xFF


class InitMode:
    def __init__(self, daemon, init: bool, exit_with: str | None):
        self.daemon = daemon
        self.init = init
        self.exit_with = ".".join(split_job_name(exit_with)) if exit_with else None
        self.status: int | None = None  # of exit_with's last process
        self._reaper: threading.Thread | None = None
        self._decided = False  # supervisor thread only

    def start(self) -> None:
        """After the daemon started (main thread)."""
        if self.exit_with:
            self.daemon.events.subscribe(f"proc.{self.exit_with}.exit", self.on_exit)
            if self.exit_with not in self.daemon.manager.jobs():
                log.warning("exit_with = %s: no such job (yet)", self.exit_with)
        if self.init:
            # The SIGCHLD handler only writes a byte to a pipe: a Python signal handler may
            # run while the main thread holds a lock (threading's own, say), so it must not
            # take one. The reaper thread does the work, on the supervisor thread.
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
            self._reaper = threading.Thread(target=self._reap_loop, name="zsup-reaper", daemon=True)
            self._reaper.start()
            signal.signal(signal.SIGCHLD, self._on_sigchld)
            log.info("init mode (pid %s): reaping orphans, stopping jobs on SIGTERM/SIGINT", os.getpid())

    def stop(self) -> None:
        """After the daemon stopped (main thread)."""
        if self._reaper is not None:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self._wake_w)  # the reaper reads EOF and ends
            self._reaper.join(5)
            os.close(self._wake_r)
            self._reaper = None

    def on_exit(self, topic: str, msg: dict, data: bytes | None) -> None:
        """A process of exit_with ended (supervisor thread)."""
        if msg.get("job") != self.exit_with or self._decided:
            return
        self.status = exit_status(msg)
        if not msg.get("reason") and not self.daemon.manager.stopping:
            # This status is the answer: the replacement the job may start meanwhile, and
            # the stop of everything, do not change it.
            self._decided = True
            log.info("%s exited with status %s: stopping (exit_with)", self.exit_with, self.status)
            self.daemon.request_stop()

    def _on_sigchld(self, signum, frame) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # a wake-up is pending already (pipe full), or we are stopping

    def _reap_loop(self) -> None:
        """zsupd's own children are the supervisor's (pidfds); only orphans are reaped here."""
        manager = self.daemon.manager
        while os.read(self._wake_r, 4096):
            if manager.stopping:
                continue  # the manager's stop kills and reaps what is left
            try:
                manager.run_supervised(manager._reap_orphans)
            except Exception:  # noqa: BLE001 - the once-a-second sweep catches up
                log.exception("reaping orphans failed")

    def exit_code(self) -> int:
        return self.status if self.exit_with and self.status is not None else 0
