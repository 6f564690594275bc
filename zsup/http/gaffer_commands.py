"""gaffer 0.5's controller commands (the ``CMD`` frames of its event channel) run on zsupd,
with results in gaffer's shapes. Pure request/answer over the gate: any thread."""

from __future__ import annotations

from zsup.errors import NotFound, ZsupError
from zsup.http import gaffer_compat as gaffer


def split_name(pname: str) -> tuple[str, str]:
    """gaffer's ``session.name`` (``default`` when there is no session)."""
    session, _, name = str(pname).rpartition(".")
    return session or "default", name


def stop_job(gate, name: str, session: str):
    """gafferd's stop_job: zsup's (the job's kept processes), then the job's one-shot
    (committed) processes too, which zsup's stop_job leaves to end by themselves."""
    result = gate.call("stop_job", name=name, session=session)
    for proc in gate.call("info", name=name, session=session).get("processes") or []:
        if proc.get("committed") and proc.get("state") != "exited":
            try:
                gate.call("stop_process", pid=proc["pid"])
            except NotFound:
                pass  # it ended meanwhile
    return result


def run_command(gate, name: str, args: list, kwargs: dict):
    """One of gaffer's controller commands on zsupd; the result in gaffer's shape.

    Raises ZsupError from the bus, or ValueError for a bad command or arguments.
    """
    def need(n: int) -> None:
        if len(args) < n:
            raise ValueError(f"{name}: expected at least {n} argument(s)")

    def job() -> dict:
        need(1)
        session, job_name = split_name(args[0])
        return {"name": job_name, "session": session}

    if name == "sessions":
        return {"sessions": gate.call("sessions")}
    if name == "jobs":
        if args:
            return {"sessionid": args[0], "jobs": gate.call("jobs", session=args[0])}
        return {"jobs": gate.call("jobs")}
    if name == "pids":
        if args:
            return {"sessionid": args[0], "pids": gate.call("pids", session=args[0])}
        return {"pids": gate.call("pids")}
    if name in ("load", "update"):
        need(1)
        if not isinstance(args[0], dict):
            raise ValueError("invalid_config")
        config, start = gaffer.job_body(args[0])
        start = kwargs.get("start", True if start is None and name == "load" else start)
        gate.call(name, config=config, session=kwargs.get("sessionid") or "default", start=start)
        return {"ok": True}
    if name in ("unload", "reload"):
        need(1)
        session, job_name = split_name(args[0])
        session = kwargs.get("sessionid") or session
        gate.call(name, name=job_name, session=session)
        return {"ok": True}
    if name in ("stop_job", "stopall"):
        stop_job(gate, **job())
        return {"ok": True}
    if name == "start_job":
        gate.call(name, **job())
        return {"ok": True}
    if name == "commit":
        extra = {k: v for k, v in zip(("graceful_timeout", "env"), args[1:]) if v is not None}
        return {"ok": True, "pid": gate.call("commit", **job(), **extra)["pid"]}
    if name == "scale":
        need(2)
        return {"numprocesses": gate.call("scale", **job(), n=args[1])["numprocesses"]}
    if name == "info":
        return {"info": gaffer.job_info(gate.call("info", **job()), True)}
    if name == "stats":
        return {"stats": gaffer.job_stats(gate.call("stats", **job()))}
    if name == "killall":
        need(2)
        gate.call("killall", **job(), sig=args[1])
        return {"ok": True}
    if name == "process_info":
        need(1)
        proc = gate.call("get_process", pid=int(args[0]))
        try:
            config = gate.call("get", name=proc["name"], session=proc["session"])
        except ZsupError:
            config = None
        return {"info": gaffer.process_info(proc, config, True)}
    if name == "process_stats":
        need(1)
        return {"stats": gate.call("process_stats", pid=int(args[0]))}
    if name == "stop_process":
        need(1)
        gate.call("stop_process", pid=int(args[0]))
        return {"ok": True}
    if name == "kill":
        need(2)
        gate.call("kill", pid=int(args[0]), sig=args[1])
        return {"ok": True}
    if name == "send":
        need(2)
        if len(args) > 2 and args[2] not in (None, "stdin"):
            raise ValueError("zsup has no custom streams: only stdin can be written")
        gate.call("send", pid=int(args[0]), data=str(args[1]))
        return {"ok": True}
    raise ValueError("command_not_found")
