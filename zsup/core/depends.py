"""Start and stop order between jobs: `depends = JOB[, JOB...]`.

A job that depends on others starts its processes only once every process of each of them
is ready (or, for a job that ran to its end under `restart = never | on-failure`, once it
exited with 0 everywhere); until then it is `running` but waiting (`waiting_for` in `info`
and `status`). When a job and the jobs it depends on are stopped together (`stop_all`, the
shutdown of zsupd), each dependency is stopped only once its dependents' processes are gone:
stop runs in the reverse order of start. Stopping a dependency alone stops it at once.

`check_graph` refuses an unknown job or a cycle with a message naming it: the config file
checks its jobs with it, and `load_session` its batch; a job loaded alone may name one that
is loaded later (it waits for it).

Thread rule: the mixin's methods run in the supervisor loop's thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zsup.core.states import JobState
from zsup.errors import BadRequest

if TYPE_CHECKING:
    from zsup.core.job import Job


def parse_depends(value, session: str) -> list[str]:
    """'db, cache' or ['db', 'other.cache'] -> full names ('<session>.db', 'other.cache')."""
    from zsup.core.jobspec import split_job_name, to_list

    names = []
    for item in to_list("depends", value):
        try:
            sess, name = split_job_name(item, None if "." in item else session)
        except BadRequest as exc:
            raise BadRequest(f"depends: {exc.message}") from None
        full = f"{sess}.{name}"
        if full not in names:
            names.append(full)
    return names


class DependencyError(BadRequest):
    """An unknown dependency or a cycle; `job` is the job whose `depends` names it."""

    def __init__(self, job: str, message: str):
        super().__init__(f"depends: {message}")
        self.job = job


def check_graph(depends: dict[str, list[str]], known: set[str] | None = None,
                scheduled: set[str] = frozenset()) -> None:
    """BadRequest naming the first unknown or scheduled dependency, or cycle. `depends`: job ->
    its dependencies; `known`: other job names that exist (default: only those of `depends`);
    `scheduled`: the jobs with a `schedule`."""
    every = set(depends) | (known or set())
    for job, deps in depends.items():
        for dep in deps:
            if dep == job:
                raise DependencyError(job, f"job {job} depends on itself")
            if dep not in every:
                raise DependencyError(job, f"job {job} depends on {dep}, an unknown job")
            if dep in scheduled:  # it runs now and then and is never "ready"
                raise DependencyError(job, f"job {job} depends on {dep}, a scheduled job (never "
                                      "ready: make it a before_start hook instead)")
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(job: str, path: list[str]) -> None:
        if state.get(job) == 2:
            return
        if state.get(job) == 1:
            cycle = path[path.index(job):] + [job]
            raise DependencyError(job, f"a cycle: {' -> '.join(cycle)}")
        state[job] = 1
        for dep in depends.get(job, ()):
            visit(dep, path + [job])
        state[job] = 2

    for job in depends:
        visit(job, [])


class Ordering:
    """Mixed into Manager (with Supervision); uses `_jobs`, `_loop`, `_stop_job`."""

    def _check_depends(self, new: list, strict: bool = False) -> None:
        """Refuse jobs (specs) that would close a cycle with the loaded ones; `strict`: or
        that name a job neither loaded nor among them (load_session's batch)."""
        graph = {name: job.spec.depends for name, job in self._jobs.items()}
        graph.update({spec.fullname: spec.depends for spec in new})
        scheduled = {name for name, job in self._jobs.items() if job.spec.schedule}
        scheduled = (scheduled - {spec.fullname for spec in new}) | {s.fullname for s in new if s.schedule}
        check_graph(graph, None if strict else {d for deps in graph.values() for d in deps}, scheduled)

    def _waiting_for(self, job: Job) -> list[str]:
        """The dependencies of `job` not ready yet (empty: it may start)."""
        out = []
        for name in job.spec.depends:
            dep = self._jobs.get(name)
            if dep is None:
                out.append(f"{name} (not loaded)")
            elif dep.state == JobState.EXITED:
                if any(f["exit_code"] != 0 for f in dep.finished):
                    out.append(f"{name} (exited with an error)")
            elif not dep.active or dep.numprocesses > len(dep.running()) or \
                    dep.lifecycle()["ready"] < dep.numprocesses:
                out.append(name)
        return out

    def _gated(self, job: Job) -> bool:
        """True (and the job waits) if `job` has nothing running and a dependency not ready."""
        job.waiting = self._waiting_for(job) if job.spec.depends and not job.running() else []
        if job.waiting:
            self._waiting.add(job.name)
        else:
            self._waiting.discard(job.name)
        return bool(job.waiting)

    def _wake_dependents(self) -> None:
        """Something became ready (or exited): start the waiting jobs that now may."""
        for name in list(self._waiting):
            job = self._jobs.get(name)
            if job is None or not job.active:
                self._waiting.discard(name)
            else:
                self._manage(job)

    def _dependents(self, job: Job) -> list[Job]:
        return [j for j in self._jobs.values() if job.name in j.spec.depends]

    def _stop_after_dependents(self, job: Job, reason: str) -> bool:
        """`job` is being stopped: if jobs that depend on it are stopping too and still have
        processes, its own processes are stopped once theirs are gone. True if deferred."""
        blockers = [j for j in self._dependents(job) if not j.active and j.processes]
        if not blockers:
            return False
        job.stop_deferred = reason
        return True

    def _stop_later(self, job: Job, reason: str) -> bool:
        """Called by _stop_job: a job others depend on decides on the next turn of the loop
        (after the rest of a bulk stop made its dependents inactive too). True if deferred."""
        if not self._dependents(job):
            return False
        job.stop_deferred = reason
        self._loop.call_soon(self._stop_deferred_check, job)
        return True

    def _stop_deferred_check(self, job: Job) -> None:
        if job.active or not job.stop_deferred or self._jobs.get(job.name) is not job:
            return
        if not self._stop_after_dependents(job, job.stop_deferred):
            self._stop_deferred_now(job)

    def _stop_deferred_now(self, job: Job) -> None:
        reason, job.stop_deferred = job.stop_deferred, None
        for proc in list(job.processes.values()):
            self._stop_proc(proc, reason)
        self._dependency_freed(job)

    def _depth(self, job: Job, seen: frozenset = frozenset()) -> int:
        """How many jobs depend on `job`, one on another (the layers of an ordered stop)."""
        if job.name in seen:
            return 0
        return max((1 + self._depth(j, seen | {job.name}) for j in self._dependents(job)), default=0)

    def _dependency_freed(self, job: Job) -> None:
        """A process of `job` ended: its dependencies waiting to stop may go now."""
        if job.processes:
            return
        for name in job.spec.depends:
            dep = self._jobs.get(name)
            if dep is not None and dep.stop_deferred and not dep.active and \
                    not self._stop_after_dependents(dep, dep.stop_deferred):
                self._stop_deferred_now(dep)
