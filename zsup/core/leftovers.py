"""What a dead process leaves behind: the rest of its process group, and orphans.

A mixin of the Manager (with zsup/core/supervision.py): it runs in the supervisor loop's
thread only, like the rest of supervision, and each entry checks it with `assert_in_loop()`.
zsupd is a child subreaper, so grandchildren that left their group come back to it as
orphans; groups whose leader died are watched until empty (the orphan guard keeps them
until then, through `group_listeners`).
"""

from __future__ import annotations

import logging
import os
import signal
import time

from zsup.core.process import Process
from zsup.core.states import ProcessState

log = logging.getLogger("zsup.core.supervision")

GROUP_CHECK_FIRST = 0.02  # first look at a lingering process group, then twice as late each time
GROUP_CHECK_MAX = 0.5


class Leftovers:
    """Process groups and orphans; see the module's docstring. Uses the Manager's `_loop`,
    `_procs`, `_lingering`, `_ignored_os_pids` and `group_listeners`."""

    # ------------------------------------------------------------------ leftovers of a dead process
    def _stop_leftovers(self, proc: Process) -> None:
        """The leader of a process group was reaped: stop what is left of its group (its
        background children, a crashed server's workers). They get the job's stop signal and,
        graceful_timeout later, SIGKILL; a group zsup was already stopping gets SIGKILL at once
        (its members had their stop signal). The group is watched until it is empty, then
        `group_listeners` hear of it (the orphan guard keeps it until then).

        The group id cannot be reused while the group has a member, zombie or not; a check
        against our own live processes covers the instant after it empties."""
        self._loop.assert_in_loop()
        pgid = proc.os_pid
        sig = signal.SIGKILL if proc.stop_reason else proc.spec.stop_signal
        # just reaped, in this thread: no process of ours can have this pid yet (no O(n) check)
        if not self._signal_group(pgid, sig, check_ours=False):
            return  # the usual case: the group died with its leader
        log.debug("process %s (%s) exited, leaving members of its group %s: signal %s", proc.pid, proc.job,
                  pgid, sig)
        self._lingering[pgid] = proc
        if sig != signal.SIGKILL:
            self._loop.call_later(proc.graceful_timeout, self._kill_group, pgid, proc)
        self._loop.call_later(GROUP_CHECK_FIRST, self._check_group, pgid, proc, GROUP_CHECK_FIRST)

    def _signal_group(self, pgid: int, sig: int, check_ours: bool = True) -> bool:
        """killpg, unless pgid is gone or is now the group of another of our processes."""
        if check_ours and any(p.os_pid == pgid and p.state != ProcessState.EXITED for p in self._procs.values()):
            return False
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a member that changed user: still there, and still watched

    def _kill_group(self, pgid: int, proc: Process) -> None:
        self._loop.assert_in_loop()
        if self._lingering.get(pgid) is proc and self._signal_group(pgid, signal.SIGKILL):
            log.warning("process group %s (%s) ignored its stop signal for %ss: SIGKILL", pgid, proc.job,
                     proc.graceful_timeout)

    def _check_group(self, pgid: int, proc: Process, delay: float) -> None:
        self._loop.assert_in_loop()
        if self._lingering.get(pgid) is not proc:
            return
        self._reap_orphans()  # members re-parented to us: their zombies would keep the group
        if self._signal_group(pgid, 0):
            delay = min(delay * 2, GROUP_CHECK_MAX)
            self._loop.call_later(delay, self._check_group, pgid, proc, delay)
            return
        del self._lingering[pgid]
        for listener in self.group_listeners:
            listener(pgid)

    # ------------------------------------------------------------------ orphans (subreaper)
    def _children_os_pids(self) -> set[int]:
        pids: set[int] = set()
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return pids
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                continue
        return pids

    def _orphans(self) -> set[int]:
        ours = {p.os_pid for p in self._procs.values()} | self._ignored_os_pids
        return self._children_os_pids() - ours

    def _reap_orphans(self) -> None:
        self._loop.assert_in_loop()
        for os_pid in self._orphans():
            try:
                os.waitpid(os_pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def _reap_orphans_every(self, interval: float) -> None:
        self._reap_orphans()
        self._loop.call_later(interval, self._reap_orphans_every, interval)

    def _kill_adopted(self) -> None:
        """At shutdown, the grandchildren we adopted as subreaper go too: no orphans."""
        self._loop.assert_in_loop()
        for pgid in list(self._lingering):
            self._signal_group(pgid, signal.SIGKILL)
        orphans = self._orphans()
        for os_pid in orphans:
            try:
                os.kill(os_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while orphans and time.monotonic() < deadline:
            for os_pid in list(orphans):
                try:
                    if os.waitpid(os_pid, os.WNOHANG)[0]:
                        orphans.discard(os_pid)
                except ChildProcessError:
                    orphans.discard(os_pid)
            if orphans:
                time.sleep(0.01)
