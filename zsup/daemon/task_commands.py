"""Bus commands of the task API (docs/tasks.md); the TaskService lives in zsup/services/tasks.py.

zsupd makes the service at start (`Daemon.tasks`), before it answers any command."""

from __future__ import annotations

from zsup.daemon.handlers import Handlers

#: These commands' handlers, by name; zsupd adds them to its Dispatcher.
HANDLERS = Handlers()
command = HANDLERS.add


@command
def task_create(d, app: str, env: str, action: str) -> dict:
    """Run process type `action` of app `app` once, with environment `env`; the new task."""
    return d.tasks.create(app, env, action)


@command
def task_get(d, id, since_output: int | None = None) -> dict:
    """A task with its output (from byte `since_output` on, when given)."""
    return d.tasks.get(id, since_output)


@command
def task_list(d, limit: int = 20, offset: int = 0) -> dict:
    """Tasks, newest first, without their output."""
    return d.tasks.list(limit, offset)


@command
def task_kill(d, id) -> dict:
    """Stop a running task (stop signal, graceful_timeout, SIGKILL); it ends as killed."""
    return d.tasks.kill(id)
