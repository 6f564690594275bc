"""zsupctl's subcommands on jobs, processes and the daemon: one bus command each, mostly."""

from __future__ import annotations

import json
import sys
import time

from zsup import __version__
from zsup.bus.parse import scale_order, signal_name
from zsup.cli.zsupctl.context import Ctl, UsageError, _full_name, _name_args
from zsup.cli.zsupctl.format import _plural, format_table, human_bytes, human_duration, job_state, parse_env
from zsup.errors import NotFound, ZsupError

# ------------------------------------------------------------------------------ jobs


def cmd_processes(ctl: Ctl) -> int:
    """gafferctl's `processes`: the names of the loaded jobs."""
    ctl.emit(ctl.call("jobs", session=ctl.args.session), lambda names: "\n".join(names))
    return 0


def cmd_status(ctl: Ctl) -> int:
    """A table of every job; figures from `status`, CPU and memory from `stats` per running job."""
    rows = ctl.call("status")
    for row in rows:
        row["stats"] = None
        if row["running"]:
            try:
                row["stats"] = ctl.call("stats", name=row["job"])
            except NotFound:
                pass  # unloaded between the two calls
    if ctl.json:
        ctl.emit(rows)
        return 0
    now = time.time()
    table = []
    for row in rows:
        stats = row["stats"] or {}
        table.append([
            row["job"],
            job_state(row),
            f"{row['running']}/{row['numprocesses']}",
            human_duration(now - row["started"]) if row.get("started") else "-",
            f"{stats['cpu']:.1f}" if "cpu" in stats else "-",
            human_bytes(stats.get("rss")) if "rss" in stats else "-",
        ])
    print(format_table(["JOB", "STATE", "PROCS", "UPTIME", "CPU%", "MEM"], table) if rows else "no jobs loaded")
    return 0


def cmd_load_process(ctl: Ctl) -> int:
    """Load one job (a JSON object) or several (a JSON list) from a file or stdin.

    A list is loaded with `load_session`, one call per session, so each session's jobs load
    all or nothing; a single object uses `load`.
    """
    configs = read_job_file(ctl.args.file)
    start = not ctl.args.no_start
    session = ctl.args.session
    if isinstance(configs, dict):
        info = ctl.call("load", config=configs, session=session, start=start)
        ctl.emit(info, lambda r: f"loaded {r['job']}" + ("" if start else " (not started)"))
        return 0
    groups: dict[str, list[dict]] = {}
    for config in configs:
        groups.setdefault(session or config.get("session") or "default", []).append(config)
    loaded: list[str] = []
    for sess, group in groups.items():
        loaded += ctl.call("load_session", session=sess, configs=group, start=start)
    ctl.emit(loaded, lambda names: "\n".join(f"loaded {n}" + ("" if start else " (not started)") for n in names))
    return 0


def read_job_file(path: str) -> dict | list[dict]:
    """The jobs of a load_process file ('-' is stdin): one object or a non-empty list of them."""
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise ZsupError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ZsupError(f"{where}: not valid JSON: {exc}") from None
    if isinstance(data, list) and data and all(isinstance(c, dict) for c in data):
        return data
    if isinstance(data, dict):
        return data
    raise ZsupError(f"{where}: expected a job (a JSON object) or a list of jobs")


def cmd_unload(ctl: Ctl) -> int:
    result = ctl.call("unload", **_name_args(ctl))
    ctl.emit(result, f"unloaded {_full_name(ctl.args.name, ctl.args.session)}")
    return 0


def cmd_start(ctl: Ctl) -> int:
    info = ctl.call("start_job", **_name_args(ctl))
    ctl.emit(info, lambda r: f"started {r['job']} ({_plural(r['numprocesses'], 'process', 'processes')} wanted)")
    return 0


def cmd_stop(ctl: Ctl) -> int:
    info = ctl.call("stop_job", **_name_args(ctl))
    ctl.emit(info, lambda r: f"stopped {r['job']}")
    return 0


def _scale(ctl: Ctl, n: str) -> int:
    result = ctl.call("scale", n=n, **_name_args(ctl))
    ctl.emit(result, lambda r: f"scaled {r['job']} to {_plural(r['numprocesses'], 'process', 'processes')}")
    return 0


def cmd_scale(ctl: Ctl) -> int:
    """`scale web 3` sets the count (sent as "=3"); `+N`/`-N`/`=N` are passed as they are."""
    order = scale_order(ctl.args.n)
    if order is None:
        raise UsageError(f"scale: bad count {ctl.args.n.strip()!r} (use 3, +2, -1 or =3)")
    return _scale(ctl, order)


def cmd_add(ctl: Ctl) -> int:
    return _scale(ctl, f"+{ctl.args.n}")


def cmd_sub(ctl: Ctl) -> int:
    return _scale(ctl, f"-{ctl.args.n}")


def cmd_restart(ctl: Ctl) -> int:
    """Replace a job's processes. `--rolling` asks zsupd for a rolling restart and follows
    it (through `info`) until it is done or failed; exit status 1 if it failed."""
    if not ctl.args.rolling:
        info = ctl.call("restart_job", **_name_args(ctl))
        ctl.emit(info, lambda r: f"restarted {r['job']}")
        return 0
    args = _name_args(ctl)
    if ctl.args.max_surge:
        args["max_surge"] = ctl.args.max_surge
    info = ctl.call("rolling_restart", **args)
    while (info.get("roll") or {}).get("phase") == "rolling":
        time.sleep(0.2)
        info = ctl.call("info", **_name_args(ctl))
    roll = info.get("roll")
    if roll is None:  # nothing running and ready to roll: zsupd restarted the job at once
        ctl.emit(info, lambda r: f"restarted {r['job']} (not rolling: it had no running processes to replace)")
        return 0
    ctl.emit(info, lambda r: f"rolling restart of {r['job']}: {roll['phase']}, "
                             f"{roll.get('replaced', 0)}/{roll.get('total', 0)} replaced"
                             + (f": {roll['reason']}" if roll.get("reason") else ""))
    return 1 if roll["phase"] == "failed" else 0


def cmd_reload(ctl: Ctl) -> int:
    """With a job: restart its processes (count back to the config's). Without: re-read the
    daemon's config file, like SIGHUP, and say what changed."""
    if ctl.args.name:
        info = ctl.call("reload", **_name_args(ctl))
        ctl.emit(info, lambda r: f"reloaded {r['job']} ({_plural(r['numprocesses'], 'process', 'processes')})")
        return 0
    ctl.emit(ctl.call("reload"), _describe_reload)
    return 0


def _describe_reload(result: dict) -> str:
    lines = [f"{what}: {', '.join(result.get(what) or [])}" for what in ("added", "removed", "changed")
             if result.get(what)]
    return "\n".join(lines) if lines else "config reloaded: nothing changed"


def cmd_info(ctl: Ctl) -> int:
    ctl.emit(ctl.call("info", **_name_args(ctl)), _describe_info)
    return 0


def _describe_info(info: dict) -> str:
    config = info.get("config", {})
    cmdline = " ".join([config.get("cmd", "")] + [str(a) for a in config.get("args") or []])
    head = [
        ("job", info["job"]),
        ("state", info["state"] + ("" if info.get("active") else " (inactive)")
         + (f", {info['stop_reason']}" if info.get("stop_reason") else "")),
        ("processes", f"{info['running']} running / {info['numprocesses']} wanted"
         + (f", {info['ready']} ready" if "ready" in info else "")),
        ("cmd", cmdline),
    ]
    text = "\n".join(f"{k + ':':<11} {v}" for k, v in head)
    procs = info.get("processes") or []
    if procs:
        rows = [[p["pid"], p["os_pid"], p["state"] + (" (commit)" if p.get("committed") else ""),
                 _readiness(p), human_duration(p.get("uptime"))] for p in procs]
        text += "\n\n" + format_table(["PID", "OS PID", "STATE", "READY", "UPTIME"], rows)
    return text


def _readiness(proc: dict) -> str:
    """The READY cell of `zsupctl info`: starting/ready/unhealthy, why, and sd_notify's STATUS."""
    if proc.get("state") != "running" or "readiness" not in proc:
        return "-"
    text = proc["readiness"]
    if proc.get("reason") and text != "ready":
        text += f": {proc['reason']}"
    if proc.get("status"):
        text += f" ({proc['status']})"
    return text


def cmd_get(ctl: Ctl) -> int:
    """The job's config as JSON, in the shape load_process reads: always JSON."""
    print(json.dumps(ctl.call("get", **_name_args(ctl)), indent=2))
    return 0


def cmd_stats(ctl: Ctl) -> int:
    ctl.emit(ctl.call("stats", **_name_args(ctl)), _describe_stats)
    return 0


def _describe_stats(stats: dict) -> str:
    rows = [[p.get("pid", "-"), p["os_pid"], f"{p['cpu']:.1f}", f"{p['mem']:.1f}", human_bytes(p["rss"]),
             p.get("cmdline", "")] for p in stats["processes"]]
    rows.append(["total", "", f"{stats['cpu']:.1f}", f"{stats['mem']:.1f}", human_bytes(stats["rss"]), ""])
    return format_table(["PID", "OS PID", "CPU%", "MEM%", "RSS", "CMDLINE"], rows, align="rrrrrl")


def cmd_pids(ctl: Ctl) -> int:
    pids = ctl.call("pids", name=ctl.args.name, session=ctl.args.session)
    ctl.emit(pids, lambda ps: "\n".join(str(p) for p in ps))
    return 0


def cmd_sessions(ctl: Ctl) -> int:
    ctl.emit(ctl.call("sessions"), lambda names: "\n".join(names))
    return 0


def cmd_commit(ctl: Ctl) -> int:
    """Start one extra, not-restarted process of a job; print its pid (for `send`, `kill`)."""
    env = dict(parse_env(e) for e in ctl.args.env or []) or None
    result = ctl.call("commit", graceful_timeout=ctl.args.graceful_timeout, env=env, **_name_args(ctl))
    ctl.emit(result, lambda r: str(r["pid"]))
    return 0


# ------------------------------------------------------------------------------ processes


def cmd_kill(ctl: Ctl) -> int:
    """A number is one of zsup's pids (`kill`); anything else is a job (`killall`)."""
    target, sig = ctl.args.target, ctl.args.signal
    if target.isdigit():
        r = ctl.call("kill", pid=int(target), sig=sig)
        ctl.emit(r, lambda r: f"sent {signal_name(r['signal'])} to process {r['pid']}")
    else:
        r = ctl.call("killall", name=target, sig=sig, session=ctl.args.session)
        ctl.emit(r, lambda r: f"sent {signal_name(r['signal'])} to {r['job']} "
                              f"({_plural(len(r['pids']), 'process', 'processes')}"
                              f"{': ' + ', '.join(map(str, r['pids'])) if r['pids'] else ''})")
    return 0


def cmd_send(ctl: Ctl) -> int:
    """Write to a process's stdin; a newline is added, like echo, unless --no-newline."""
    text = " ".join(ctl.args.text)
    if not ctl.args.no_newline:
        text += "\n"
    r = ctl.call("send", pid=ctl.args.pid, data=text)
    ctl.emit(r, lambda r: f"sent {_plural(r['bytes'], 'byte', 'bytes')} to process {r['pid']}")
    return 0


# ------------------------------------------------------------------------------ daemon


def _version_text(r: dict) -> str:
    text = f"zsupctl {__version__}, zsupd {r['version']} (bus protocol {r['protocol']})"
    cg = r.get("cgroups")
    if cg is not None:  # whether a job's tree is held by a cgroup or by its process group
        text += (f"\ncgroups: active ({cg.get('path')})" if cg.get("active")
                 else f"\ncgroups: inactive ({cg.get('reason')}); jobs are held by process groups")
    return text


def cmd_version(ctl: Ctl) -> int:
    r = ctl.call("version")
    ctl.emit({"zsupctl": __version__, **r}, _version_text)
    return 0


def cmd_sockets(ctl: Ctl) -> int:
    rows = ctl.call("sockets")
    ctl.emit(rows, lambda rows: "\n".join(f"{r['name']}\t{r['bind']}\tfd {r['fd']}\t{', '.join(r['jobs']) or '-'}"
                                          for r in rows) or None)
    return 0


def cmd_ping(ctl: Ctl) -> int:
    ctl.emit(ctl.call("ping"), lambda r: str(r))
    return 0


def cmd_reopen_logs(ctl: Ctl) -> int:
    ctl.emit(ctl.call("reopen_logs"), "log files reopened")
    return 0
