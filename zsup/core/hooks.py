"""Hooks: commands run around a process's life, `before_start`, `after_start` (once it is
ready), `before_stop` (before its stop signal) and `after_stop` (once it exited).

Each runs with `/bin/sh -c`, the job's env and cwd, plus `ZSUP_HOOK`, `ZSUP_JOB`, `ZSUP_PID`,
`ZSUP_OS_PID`, `ZSUP_INSTANCE` (and `ZSUP_EXIT_CODE` after a stop), for at most
`hook_timeout` seconds (then its process group is killed). Its output goes to the job's log
and to `io.<session>.<name>.<pid>.hook` under the label `hook`; `proc.<session>.<name>.hook`
tells how it ended (`hook`, `error`). A `before_start` that fails fails the spawn: a
`spawn_error` with the hook's error, retried on the back-off or flapping schedule; a failing
`before_stop` does not keep the process from being stopped.

Thread rule: hooks run on the CheckPool's worker threads (`run_hook` blocks); the mixin's
methods run in the supervisor loop's thread and get each result back with call_soon.
"""

from __future__ import annotations

import os
import signal
import subprocess

from zsup.bus.topics import io_topic
from zsup.core.job import Job
from zsup.core.process import Process, build_env

HOOKS = ("before_start", "after_start", "before_stop", "after_stop")
MAX_OUTPUT = 64 * 1024  # bytes of a hook's output kept for the log


def run_hook(cmd: str, timeout: float, env: dict, cwd: str | None) -> tuple[bytes, str | None]:
    """Run one hook (worker threads only): its output and None, or why it failed."""
    try:
        child = subprocess.Popen(cmd, shell=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return b"", f"cannot run: {exc.strerror or exc}"
    try:
        out, _ = child.communicate(timeout=timeout)
        error = None if child.returncode == 0 else f"exited with {child.returncode}"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = child.communicate()
        error = f"timed out after {timeout:g}s"
    return out[:MAX_OUTPUT], error


class Hooks:
    """Mixed into Manager (with Supervision); uses `_loop`, `_checks`, `events`, `log_writer`."""

    def _run_hook(self, job: Job, proc: Process, hook: str, then=None) -> bool:
        """Start `hook` for `proc` if the job has one; `then(error)` in the loop once it ended.
        False (and `then` is not called) if the job has no such hook."""
        spec = proc.spec
        cmd = getattr(spec, hook)
        if not cmd:
            return False
        extra = {"ZSUP_HOOK": hook, "ZSUP_JOB": spec.fullname, "ZSUP_PID": proc.pid, "ZSUP_OS_PID": proc.os_pid,
                 "ZSUP_INSTANCE": proc.instance or ""}
        if hook == "after_stop":
            extra["ZSUP_EXIT_CODE"] = "" if proc.exit_code is None else proc.exit_code
        env, cwd, timeout = build_env(spec, extra), spec.cwd, spec.hook_timeout
        self._checks.call(self._loop, lambda: run_hook(cmd, timeout, env, cwd),
                          lambda result: self._hook_done(job, proc, hook, result, then),
                          lambda exc: (b"", str(exc)))
        return True

    def _hook_done(self, job: Job, proc: Process, hook: str, result, then) -> None:
        output, error = result
        s, n = proc.spec.session, proc.spec.name
        if output:
            if not output.endswith(b"\n"):
                output += b"\n"
            lines = output.count(b"\n")
            job.hook_seq += lines
            first = job.hook_seq - lines + 1
            self.events.publish(io_topic(s, n, proc.pid, "hook"), {
                "pid": proc.pid, "os_pid": proc.os_pid, "job": proc.job, "label": "hook", "seq": first,
                "lines": lines}, output)
            if self.log_writer is not None:
                self.log_writer.write(proc.job, "hook", proc.spec, proc.pid, proc.os_pid, first, output)
        self._publish_proc(proc, "hook", hook=hook, error=error)
        if then is not None:
            then(error)

    # ------------------------------------------------------------------ before_start
    def _spawn_hooked(self, job: Job, then=None):
        """The one way a kept-alive process is started (a start, a scale, a restart, a roll, a
        scheduled run, a retry after a death or flapping): `_spawn`, after the job's
        `before_start` if it has one (its `after_start` runs once the process is ready).

        Without `then`: the spawn's Process, or None if it failed at once; with a hook the
        spawn comes later, the placeholder returned stands for it (counted in `hook_starts`
        meanwhile, so `_manage` does not start it twice), and a failing hook is a spawn error
        counted as a death. With `then` (a roll, which keeps its own count): `then(proc,
        error)` in the loop, exactly once, unless the job was stopped or removed meanwhile;
        `proc` is None if the hook or the spawn failed (`error` says why)."""
        if not job.spec.before_start:
            proc = self._spawn(job)
            if then is not None:
                then(proc, None if proc is not None else job.last_error)
            return proc
        placeholder = Process(0, job.spec)  # no pid yet: ZSUP_PID is 0 for before_start
        if then is None:
            job.hook_starts += 1
        self._run_hook(job, placeholder, "before_start",
                       lambda error: self._before_start_done(job, placeholder, error, then))
        return placeholder

    def _before_start_done(self, job: Job, placeholder: Process, error: str | None, then=None) -> None:
        if then is None:
            job.hook_starts -= 1
        if self._jobs.get(job.name) is not job or not job.active or self.stopping:
            return
        if error is not None:
            message = f"before_start: {error}"
            self._publish_proc(placeholder, "spawn_error", error=message)
            if then is not None:
                then(None, message)
                return
            self._spawn_failed(job, message)
            self._on_death(job, placeholder)
            return
        if then is not None:
            proc = self._spawn(job)
            then(proc, None if proc is not None else job.last_error)
            return
        wanted = job.numprocesses + (len(job.roll.pending) if job.roll else 0)
        if len(job.running()) + len(job.finished) + job.hook_starts < wanted:
            self._spawn(job)
