"""Bus commands of the task API (docs/tasks.md); the TaskService lives in zsup/tasks.py.

The service is made on first use (`service(d)`), which also marks the tasks a previous zsupd
left running as failed. zsupd may call `service(d)` at start to do that at once.
"""

from __future__ import annotations

import threading

from .commands import command

_lock = threading.Lock()


def service(d):
    svc = getattr(d, "_tasks", None)
    if svc is None:
        from .tasks import TaskService

        with _lock:
            svc = getattr(d, "_tasks", None)
            if svc is None:
                svc = d._tasks = TaskService(d)
    return svc


@command
def task_create(d, app: str, env: str, action: str) -> dict:
    """Run process type `action` of app `app` once, with environment `env`; the new task."""
    return service(d).create(app, env, action)


@command
def task_get(d, id, since_output: int | None = None) -> dict:
    """A task with its output (from byte `since_output` on, when given)."""
    return service(d).get(id, since_output)


@command
def task_list(d, limit: int = 20, offset: int = 0) -> dict:
    """Tasks, newest first, without their output."""
    return service(d).list(limit, offset)


@command
def task_kill(d, id) -> dict:
    """Stop a running task (stop signal, graceful_timeout, SIGKILL); it ends as killed."""
    return service(d).kill(id)
