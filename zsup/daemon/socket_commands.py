"""Listening sockets added and removed at run time: the bus commands `add_socket` and
`remove_socket` (declared in zsup/bus/schema.py; `sockets` lists them, in commands.py).

A socket added over the bus is kept like a job loaded over the bus: in the store (table
`runtime_sockets`), bound again when zsupd restarts (before the jobs start, so they find it),
and kept across `reload` unless the config file now defines a socket of the same name (the
file wins; the stored row is dropped at the next start). A unix socket's path must be
absolute (there is no config file to be relative to). A socket that a loaded job lists in
`sockets` cannot be removed (`conflict`); one of the config file cannot be removed over the
bus (`forbidden`).

Thread rule: the handlers and `restore` run in zsupd's control thread (or at start, before
the bus serves), as zsup/daemon/sockets.py's `apply` does.
"""

from __future__ import annotations

import json
import logging

from zsup.daemon.handlers import Handlers
from zsup.daemon.sockets import parse_socket
from zsup.errors import BadRequest, Conflict, ZsupError

log = logging.getLogger(__name__)

#: These commands' handlers, by name; zsupd adds them to its Dispatcher.
HANDLERS = Handlers()
command = HANDLERS.add

TABLE = "CREATE TABLE IF NOT EXISTS runtime_sockets (name TEXT PRIMARY KEY, config TEXT NOT NULL)"


@command
def add_socket(d, name: str, config: dict) -> dict:
    config = dict(config)
    if config.pop("name", name) != name:
        raise BadRequest(f"name: the config names socket {config.get('name')!r}, not {name!r}")
    spec = parse_socket(name, config)
    if spec.unix_path is not None and not spec.unix_path.startswith("/"):
        raise BadRequest("bind: a unix socket added at run time needs an absolute path")
    row = d.sockets.add(spec, d.manager)
    d.store.execute(TABLE)
    d.store.execute("INSERT OR REPLACE INTO runtime_sockets (name, config) VALUES (?, ?)",
                    (name, json.dumps(spec.to_dict())))
    return {**row, "jobs": []}


@command
def remove_socket(d, name: str) -> dict:
    def users() -> list[str]:
        return [job for job in d.manager.jobs() if name in (d.manager.get(job).get("sockets") or [])]

    using = d.supervise(users) if name in d.sockets.runtime else []  # else remove() says why not
    if using:
        raise Conflict(f"socket {name} is used by {', '.join(using)}: unload them, or update their "
                       "sockets, first")
    d.sockets.remove(name, d.manager)
    d.store.execute(TABLE)
    d.store.execute("DELETE FROM runtime_sockets WHERE name = ?", (name,))
    return {"ok": True, "name": name}


def restore(d) -> None:
    """At start, after the config file's sockets: bind again those added over the bus. One that
    cannot be bound is logged and left out (its jobs fail to spawn, saying so)."""
    d.store.execute(TABLE)
    in_file = {spec.name for spec in d.config.sockets}
    for name, text in d.store.execute("SELECT name, config FROM runtime_sockets ORDER BY name").fetchall():
        if name in in_file:
            d.store.execute("DELETE FROM runtime_sockets WHERE name = ?", (name,))
            continue
        try:
            d.sockets.add(parse_socket(name, json.loads(text)), d.manager)
        except (ZsupError, ValueError) as exc:
            log.error("cannot restore socket %s: %s", name, getattr(exc, "message", exc))
