"""Bus commands of the remote agent (docs/agent.md); the AgentService lives in zsup/services/agent.py.

zsupd makes the service at start (`Daemon.agent`), before it answers any command."""

from __future__ import annotations

from zsup.daemon.handlers import Handlers

#: These commands' handlers, by name; zsupd adds them to its Dispatcher.
HANDLERS = Handlers()
command = HANDLERS.add


@command
def agent_create(d, app: str, node: str, process_type: str, source_url: str, env: dict | None = None) -> dict:
    """Fetch source_url, unpack it and run its Procfile's process_type until deleted; answers
    at once (state pending), the rest happens in a worker thread."""
    return d.agent.create(app, node, process_type, source_url, env)


@command
def agent_list(d) -> list:
    return d.agent.list()


@command
def agent_status(d, slug: str) -> dict:
    return d.agent.status(slug)


@command
def agent_delete(d, slug: str) -> dict:
    """Stop the process, forget it and remove its files."""
    return d.agent.delete(slug)
