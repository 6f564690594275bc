"""gafferctl's older command names (gaffer 0.4) that zsupctl's own names do not cover:
``update``/``update_process``, ``numprocesses``, ``running``. The other old names are
aliases set in parser.py (docs/zsupctl.md, "gafferctl's older names")."""

from __future__ import annotations

from zsup.cli.zsupctl.context import Ctl, _name_args
from zsup.cli.zsupctl.jobs import read_job_file
from zsup.errors import ZsupError


def cmd_update(ctl: Ctl) -> int:
    """Replace a loaded job's config with the one in FILE (one JSON object); its processes
    are replaced (zsupd's ``update``)."""
    config = read_job_file(ctl.args.file)
    if not isinstance(config, dict):
        raise ZsupError("update takes one job (a JSON object), not a list")
    info = ctl.call("update", config=config, session=ctl.args.session)
    ctl.emit(info, lambda r: f"updated {r['job']}")
    return 0


def cmd_numprocesses(ctl: Ctl) -> int:
    """How many processes the job keeps (its configured count)."""
    info = ctl.call("info", **_name_args(ctl))
    ctl.emit({"job": info["job"], "numprocesses": info["numprocesses"]},
             lambda r: str(r["numprocesses"]))
    return 0


def cmd_running(ctl: Ctl) -> int:
    """How many of the job's processes are running now."""
    info = ctl.call("info", **_name_args(ctl))
    running = len([p for p in info.get("processes") or [] if p.get("state") != "exited"])
    ctl.emit({"job": info["job"], "running": running}, lambda r: str(r["running"]))
    return 0
