"""Bus commands of the remote agent (docs/agent.md); the AgentService lives in zsup/agent.py.

The service is made on first use (`service(d)`), which also resumes setups a previous zsupd
left unfinished. zsupd may call `service(d)` at start to do that at once.
"""

from __future__ import annotations

import threading

from .commands import command

_lock = threading.Lock()


def service(d):
    svc = getattr(d, "_agent", None)
    if svc is None:
        from .agent import AgentService

        with _lock:
            svc = getattr(d, "_agent", None)
            if svc is None:
                svc = d._agent = AgentService(d)
    return svc


@command
def agent_create(d, app: str, node: str, process_type: str, source_url: str, env: dict | None = None) -> dict:
    """Fetch source_url, unpack it and run its Procfile's process_type until deleted; answers
    at once (state pending), the rest happens in a worker thread."""
    return service(d).create(app, node, process_type, source_url, env)


@command
def agent_list(d) -> list:
    return service(d).list()


@command
def agent_status(d, slug: str) -> dict:
    return service(d).status(slug)


@command
def agent_delete(d, slug: str) -> dict:
    """Stop the process, forget it and remove its files."""
    return service(d).delete(slug)
