"""The orphan guard: when zsupd is SIGKILLed, its children's process groups go too.

The kernel's parent-death signal reaches the children zsupd started, not what they started in
turn (a shell's background jobs, a server's workers). So zsupd keeps a list of its children's
process groups in a file, and a tiny shell guard, started at boot in a session of its own,
waits for zsupd to die: it holds the read end of a pipe whose write end only zsupd has, so
end-of-file means zsupd is gone, however it went. Then the guard SIGKILLs every group still
in the list. On a clean stop zsupd has stopped everything itself and tells the guard to exit.

The list is an append-only log of `+PGID` and `-PGID` lines (one short write per spawn and
per exit, nothing on the supervision path waits for it), compacted when it grows.
"""

from __future__ import annotations

import os
import subprocess
import threading

from zsup.bus.topics import PROC

GUARD_SCRIPT = r"""
cat > /dev/null
[ -e "$1.done" ] && exit 0
awk '/^\+/ {live[substr($0, 2)] = 1} /^-/ {delete live[substr($0, 2)]} END {for (g in live) print g}' "$1" |
while read -r pgid; do kill -s KILL -- "-$pgid" 2>/dev/null; done
"""
COMPACT_AT = 1 << 20


class OrphanGuard:
    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._fd = -1
        self._size = 0  # bytes in the list file, counted here rather than asked of the kernel
        self._pipe_w = -1
        self._proc: subprocess.Popen | None = None

    def start(self) -> int:
        """Start the guard; returns its pid (a child that the orphan reaper must leave alone)."""
        for stale in (self.path, self.path + ".done"):
            if os.path.exists(stale):
                os.unlink(stale)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        r, self._pipe_w = os.pipe2(os.O_CLOEXEC)
        self._proc = subprocess.Popen(["/bin/sh", "-c", GUARD_SCRIPT, "zsup-guard", self.path], stdin=r,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, close_fds=True)
        os.close(r)
        return self._proc.pid

    def on_event(self, topic: str, msg: dict, data) -> None:
        """Event listener: record spawns and reaps of attached (not detached) processes. A
        reap whose group still has members (`lingering`) keeps the group listed until
        `forget` hears it is empty."""
        if not topic.startswith(PROC) or msg.get("detach"):
            return
        event = msg.get("event")
        if event == "spawn":
            self._record(f"+{msg['os_pid']}\n", msg["os_pid"], True)
        elif event == "reap" and not msg.get("lingering"):
            self.forget(msg["os_pid"])

    def forget(self, pgid: int) -> None:
        """The group is empty: nothing of it is left to kill (Manager.group_listeners)."""
        if pgid in self._live:
            self._record(f"-{pgid}\n", pgid, False)

    def _record(self, line: str, pgid: int, alive: bool) -> None:
        with self._lock:
            if self._fd < 0:
                return
            (self._live.add if alive else self._live.discard)(pgid)
            self._size += os.write(self._fd, line.encode())
            if self._size > COMPACT_AT:
                self._compact()

    def _compact(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(f"+{pgid}\n" for pgid in self._live)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    def stop(self) -> None:
        """A clean stop: zsupd stopped its children itself; the guard just exits."""
        if self._proc is None:
            return
        with open(self.path + ".done", "w"):
            pass
        os.close(self._pipe_w)
        self._proc.wait(5)
        with self._lock:
            os.close(self._fd)
            self._fd = -1
        for path in (self.path, self.path + ".done"):
            if os.path.exists(path):
                os.unlink(path)
        self._proc = None
