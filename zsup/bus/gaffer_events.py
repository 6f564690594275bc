"""gaffer 0.5's manager event names for zsup's bus events: what gaffer's event channel
(zsup.http.gaffer_ws) and gafferd plugins (zsup.daemon.gaffer_plugins) see. Pure: no I/O."""

from __future__ import annotations


def channel_event(topic: str, msg: dict) -> list[tuple[str, dict]]:
    """gaffer's manager events for one zsup bus event: [(gaffer event name, fields)].

    zsup ``job.S.N.create`` is gaffer's ``load``, ``delete`` is ``unload``; ``start``,
    ``stop``, ``update`` keep their names; process events (``spawn``, ``exit``, ``reap``,
    ``flap``; ``stop_pid`` as gaffer's ``stop_process``) come as ``E``, ``job.S.N.E`` and
    (with a pid) ``proc.PID.E``. ``name`` is ``session.name`` as in gaffer.
    """
    parts = topic.split(".")
    if len(parts) < 4 or parts[0] not in ("job", "proc"):
        return []
    kind, event = parts[0], parts[-1]
    pname = msg.get("job") or ".".join(parts[1:-1])
    fields = dict(msg, name=pname)
    fields.pop("event", None)
    if kind == "job":
        event = {"create": "load", "delete": "unload"}.get(event, event)
        out = [(event, fields)]
        if event in ("start", "stop", "update"):
            out.append((f"job.{pname}.{event}", fields))
        return out
    event = {"stop_pid": "stop_process"}.get(event, event)
    out = [(event, fields), (f"job.{pname}.{event}", fields)]
    if fields.get("pid") is not None:
        out.append((f"proc.{fields['pid']}.{event}", fields))
    return out
