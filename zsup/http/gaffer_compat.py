"""gaffer 0.5's shapes on zsup's REST answers, so gaffer's own client and CLI work unchanged.

Two rules (docs/http.md, "gaffer compatibility"):

- Fields gaffer reads that zsup lacks are always added (``max_processes``, ``running_out``,
  job stats' ``stats``/``min_*``/``max_*``, process info's ``env``, ``create_time``, ...).
- Where gaffer's form clashes with zsup's (``/ping``'s body, ``.../state``'s body, a job's and
  a process's ``name``, a job's ``processes``), the answer is gaffer's for a *gaffer request*
  and zsup's otherwise. A gaffer request is one with ``?format=gaffer``, or one that looks
  like gaffer's client (``Accept: application/json`` exactly and no ``User-Agent``: tornado
  2.4's client as gaffer uses it); ``?format=zsup`` forces zsup's form.

Pure functions over bus answers: no I/O here, so any thread may call them.
"""

from __future__ import annotations

from typing import Any

from zsup.bus.gaffer_events import channel_event  # noqa: F401  (gaffer_ws uses it from here)
from zsup.http.web import HTTPError

#: gaffer's job options zsup does not have, accepted when empty (gaffer's client sends them
#: with their defaults).
_EMPTY_OK = ("custom_streams", "custom_channels")


def is_gaffer_request(req) -> bool:
    """Does this request want gaffer's form where it clashes with zsup's?"""
    fmt = req.GET.get("format")
    if fmt in ("gaffer", "zsup"):
        return fmt == "gaffer"
    return (req.headers.get("Accept", "").strip() == "application/json"
            and "User-Agent" not in req.headers)


def job_body(body: dict) -> tuple[dict, bool | None]:
    """gaffer's job body (a ProcessConfig dict plus ``start``) -> (zsup job config, start).

    ``start`` is None when the body does not say. Raises HTTPError(400) for a gaffer option
    zsup cannot honour.
    """
    config = dict(body)
    start = config.pop("start", None)
    if start is not None and not isinstance(start, bool):
        raise HTTPError(400, f"start: expected true or false, got {start!r}")
    for key in _EMPTY_OK:
        if key in config:
            if config[key]:
                raise HTTPError(400, f"{key}: zsup has no custom streams or channels "
                                     "(use redirect_output labels)")
            del config[key]
    return config, start


def _live(processes: list[dict]) -> list[dict]:
    return [p for p in processes if p.get("state") != "exited"]


def job_info(info: dict, gaffer: bool) -> dict:
    """A job's info with gaffer's fields added; gaffer's ``name`` and ``processes`` if asked."""
    out = dict(info)
    live = _live(info.get("processes") or [])
    out["max_processes"] = info.get("numprocesses")
    out["running"] = len(live)
    out["running_out"] = len([p for p in live if p.get("committed")])
    if gaffer:
        out["name"] = info["job"]
        out["processes"] = [p["pid"] for p in live]
    return out


def _sum_min_max(values: list) -> tuple[Any, Any, Any]:
    if not values:
        return 0.0, 0.0, 0.0
    return sum(values), max(values), min(values)


def job_stats(stats: dict) -> dict:
    """A job's stats with gaffer's ``name``, ``stats`` (one per process, with ``pid``) and
    min/max of cpu and mem."""
    out = dict(stats)
    procs = stats.get("processes") or []
    out["name"] = stats.get("job")
    out["stats"] = procs
    out["cpu"], out["max_cpu"], out["min_cpu"] = _sum_min_max([p.get("cpu", 0.0) for p in procs])
    out["mem"], out["max_mem"], out["min_mem"] = _sum_min_max([p.get("mem", 0.0) for p in procs])
    return out


def process_info(proc: dict, config: dict | None, gaffer: bool) -> dict:
    """A process's info with gaffer's keys; `config` is its job's config (None if unloaded)."""
    config = config or {}
    out = dict(proc)
    out.setdefault("env", config.get("env") or {})
    out.setdefault("uid", config.get("uid"))
    out.setdefault("gid", config.get("gid"))
    out["create_time"] = proc.get("started")
    out["commited"] = bool(proc.get("committed"))  # gaffer's spelling
    out["redirect_output"] = proc.get("labels") or []
    out["custom_streams"] = []
    out["active"] = proc.get("state") != "exited"
    if gaffer:
        out["name"] = proc["job"]
    return out
