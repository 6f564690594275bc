"""cgroup v2 per job, where the host delegates a cgroup to zsupd (issue 16).

At start (`setup`, called once by zsupd) zsupd finds its own cgroup from /proc/self/cgroup
(the `0::PATH` line) under the cgroup2 mount of /proc/self/mountinfo. It uses it only if that
cgroup offers the memory, cpu and pids controllers and zsupd may write there (systemd's
`Delegate=yes`, or root on a host without systemd); then it moves itself into a leaf
`BASE/zsupd` (cgroup v2 lets only leaves hold processes once controllers are enabled) and
enables the three controllers for BASE's children. Anything else leaves cgroups inactive,
with the reason in `info()` (bus `version`, `zsupctl version`): zsup then stops process
trees by process group, as it always did.

The tree, under BASE (zsupd's own cgroup):
- `job-SESSION.NAME`: one job. Its `cgroup_memory_max` -> memory.max, `cgroup_cpu_max`
  (percent of one CPU) -> cpu.max, `cgroup_pids_max` -> pids.max cap every process of the job
  together, children included; `stats` reads memory.current, pids.current and cpu.stat there.
- `job-SESSION.NAME/p-PID`: one process (zsup's pid) and everything it starts, `setsid()`
  or not. zsupd writes the process's pid into it right after the spawn: a child that the
  program forks before that write (within a millisecond or so of exec) stays in BASE/zsupd and
  is stopped by process group only. When the process is killed (SIGKILL after its graceful
  timeout) `cgroup.kill` kills the whole cgroup with it; once it has exited, what it left
  there gets the stop signal, then `cgroup.kill` after graceful_timeout, and the folder goes.

Thread rule: `place`, `kill` and `release` run in the supervisor loop's thread (a few small
writes to cgroupfs, which never block on disk); `stats` from any thread.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

NEEDED = ("memory", "cpu", "pids")
PERIOD = 100_000  # cpu.max's period, microseconds


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Cgroups:
    """zsupd's cgroup tree, or the reason there is none (`active` False: every method does nothing)."""

    def __init__(self, base: str | None, reason: str):
        self.base = base
        self.active = base is not None
        self.reason = reason

    def info(self) -> dict:
        return {"active": self.active, "path": self.base, "reason": self.reason}

    def _job(self, job: str) -> str:
        return os.path.join(self.base, f"job-{job}")

    def _proc(self, proc) -> str:
        return os.path.join(self._job(proc.job), f"p-{proc.pid}")

    def place(self, proc) -> str | None:
        """Put a just-spawned process in its own cgroup under its job's, the job's limits set
        from its spec. Returns an error (logged by the caller, the process runs on) or None."""
        if not self.active:
            return None
        spec, job = proc.spec, self._job(proc.job)
        try:
            os.makedirs(self._proc(proc), exist_ok=True)
            cpu = None if spec.cgroup_cpu_max is None else f"{int(spec.cgroup_cpu_max * PERIOD / 100)} {PERIOD}"
            for name, value in (("memory.max", spec.cgroup_memory_max), ("cpu.max", cpu),
                                ("pids.max", spec.cgroup_pids_max)):
                path = os.path.join(job, name)
                if value is not None or os.path.exists(path):  # a limit set, or one to reset
                    _write(path, "max" if value is None else str(value))
            _write(os.path.join(self._proc(proc), "cgroup.procs"), str(proc.os_pid))
        except OSError as exc:
            return f"cgroup {job}: {exc.strerror or exc}"
        return None

    def kill(self, proc) -> None:
        """SIGKILL everything in the process's cgroup (its whole tree)."""
        if not self.active:
            return
        path = self._proc(proc)
        try:
            _write(os.path.join(path, "cgroup.kill"), "1")
        except FileNotFoundError:
            pass
        except OSError:  # a kernel before 5.14 has no cgroup.kill: one by one
            self.signal(proc, signal.SIGKILL)

    def signal(self, proc, sig: int) -> None:
        for pid in _pids(self._proc(proc)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def release(self, proc) -> bool:
        """Remove the process's cgroup once empty: False while members remain (stop them, and
        call again later)."""
        if not self.active:
            return True
        path = self._proc(proc)
        if _pids(path):
            return False
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        try:  # the job's own folder goes with its last process (its limits are set again at a spawn)
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass
        return True

    def stats(self, job: str) -> dict | None:
        """The cgroup figures of a job (`session.name`): {memory (bytes), pids, cpu_seconds,
        path}; None without one."""
        if not self.active:
            return None
        job = self._job(job)
        try:
            usage = dict(line.split() for line in _read(os.path.join(job, "cpu.stat")).splitlines())
            return {"memory": int(_read(os.path.join(job, "memory.current"))),
                    "pids": int(_read(os.path.join(job, "pids.current"))),
                    "cpu_seconds": int(usage["usage_usec"]) / 1e6, "path": job}
        except (OSError, KeyError, ValueError):
            return None


def _pids(path: str) -> list[int]:
    try:
        return [int(line) for line in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def detect(proc_dir: str = "/proc/self", needed: tuple = NEEDED) -> Cgroups:
    """Where zsupd's own cgroup v2 is and whether zsupd may use it; moves nothing."""
    try:
        own = next((line[3:] for line in _read(f"{proc_dir}/cgroup").splitlines() if line.startswith("0::")), None)
        mounts = [line.split(" - ", 1) for line in _read(f"{proc_dir}/mountinfo").splitlines()]
    except OSError as exc:
        return Cgroups(None, f"cannot read {proc_dir}: {exc.strerror}")
    if own is None:
        return Cgroups(None, "no cgroup v2: /proc/self/cgroup has no 0:: line")
    mount = next((head.split()[4] for head, tail in (m for m in mounts if len(m) == 2)
                  if tail.split()[0] == "cgroup2"), None)
    if mount is None:
        return Cgroups(None, "no cgroup2 file system mounted")
    base = os.path.normpath(os.path.join(mount, own.lstrip("/")))
    try:
        offered = _read(os.path.join(base, "cgroup.controllers")).split()
    except OSError as exc:
        return Cgroups(None, f"cannot read {base}/cgroup.controllers: {exc.strerror}")
    missing = [c for c in needed if c not in offered]
    if missing:
        return Cgroups(None, f"cgroup v2 at {base} offers no {', '.join(missing)} controller "
                             "(on a cgroup v1 hierarchy, or not delegated)")
    if not (os.access(base, os.W_OK) and os.access(os.path.join(base, "cgroup.subtree_control"), os.W_OK)):
        return Cgroups(None, f"{base} is not writable by zsupd (systemd: Delegate=yes)")
    return Cgroups(base, f"cgroup v2 at {base}")


def setup(proc_dir: str = "/proc/self", needed: tuple = NEEDED) -> Cgroups:
    """`detect`, then move zsupd into BASE/zsupd and enable the controllers for BASE's
    children. Inactive, with the reason, if a step fails (logged either way)."""
    found = _setup(proc_dir, needed)
    log.info("cgroups: %s", f"active, {found.reason}" if found.active else f"inactive: {found.reason}")
    return found


def _setup(proc_dir: str, needed: tuple) -> Cgroups:
    found = detect(proc_dir, needed)
    if not found.active:
        return found
    base = found.base
    try:
        os.makedirs(os.path.join(base, "zsupd"), exist_ok=True)
        _write(os.path.join(base, "zsupd", "cgroup.procs"), str(os.getpid()))
        if needed:
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in needed))
    except OSError as exc:
        return Cgroups(None, f"cannot set up {base}: {exc.strerror or exc}")
    return found
