"""zsupctl: control a running zsupd from the command line (gafferctl's commands, and more).

Everything goes over the bus (docs/bus.md): commands over the ROUTER socket through
`zsup.bus.client.Client`, live events and output over the PUB socket through `Subscriber`.
zsupctl keeps no state of its own, so any number of them can run beside the HTTP gateway.

Why some things are done the way they are:

- Global options (`--bus`, `--state-dir`, `--json`, `--timeout`, ...) are accepted before and
  after the subcommand: people type them in both places. They are declared on one parent
  parser with SUPPRESS defaults, so a value given after the subcommand does not get
  overwritten by the main parser's default.
- Every error is one line on stderr and exit status 1 (argparse's usage errors keep 2), so
  scripts can tell "zsupd said no" from "you typed it wrong".
- `tail` and `logs -f` join old output (the ring buffer, the log files) with live output
  without a gap or a duplicate: they subscribe first, then read what is stored, then drop
  the live lines whose `seq` they have already printed, per (pid, label). A live line whose
  seq jumps ahead (the subscription was not live yet, or the high-water mark dropped some)
  is preceded by a `read_output` call that fills the hole from the ring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from zsup import __version__
from zsup.bus.client import Client, Subscriber, default_endpoints
from zsup.bus.protocol import Event
from zsup.errors import NotFound, ZsupError
from zsup.core.logfiles import LogRecord, read_log

PROG = "zsupctl"
DEFAULT_TIMEOUT = 5.0
# How long tail/logs -f wait for a first live message before reading stored output. The
# subscription usually reaches zsupd within a millisecond over ipc; the gap filling from
# the ring covers the rare case where it takes longer.
LIVE_WAIT = 0.3
JOB_EVENTS = {"create", "start", "stop", "restart", "update", "delete"}
PROC_EVENTS = {"spawn", "exit", "reap", "stop_pid", "flap", "spawn_error"}
EVENT_KINDS = ("job", "proc", "stats", "io")


# ------------------------------------------------------------------------------ formatting


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """An aligned text table: numbers right-aligned, text left-aligned, the last column free.

    `align` ("l"/"r" per column) overrides the guess made from the cells. The last column is
    not padded, so a long command line does not push trailing blanks.
    """
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    if align is not None:
        numeric = [a == "r" for a in align]
    else:
        numeric = [bool(rows) and all(_looks_numeric(r[i]) for r in rows if r[i]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            if numeric[i]:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell if last else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers))] + [line(r) for r in rows])


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.]+[%KMGT]?i?B?", text)) or text == "-"


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5K': binary units, one decimal below 10, as `ps`/`top` readers expect."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}T"


def human_duration(seconds: float | None) -> str:
    """192 -> '3m12s': the two largest units are plenty to read an uptime at a glance."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def parse_since(text: str) -> float:
    """`10m`, `2h`, `30s`, `1d` ago, or an ISO timestamp (local time unless it has an offset)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m:
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: use an ISO timestamp (2026-01-31T14:00) or an age (30s, 10m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a naive time is the user's local time
    return when.timestamp()


# ------------------------------------------------------------------------------ context


@dataclass
class Ctl:
    """What every subcommand needs: the parsed options, a lazily opened Client, the output mode."""

    args: argparse.Namespace
    bus: str
    pub: str | None
    _client: Client | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    @property
    def curve(self) -> dict | None:
        """CURVE keys for a tcp:// bus, from --curve-key and --server-key."""
        if not (self.args.curve_key or self.args.server_key):
            return None
        if not (self.args.curve_key and self.args.server_key):
            raise ZsupError("--curve-key and --server-key go together")
        from zsup.bus.curve import client_curve

        return client_curve(self.args.curve_key, self.args.server_key)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.bus, timeout=self.args.timeout, curve=self.curve)
        return self._client

    def call(self, cmd: str, **args: Any) -> Any:
        """Run a bus command, leaving out arguments that are None (the daemon's defaults apply)."""
        return self.client.request(cmd, {k: v for k, v in args.items() if v is not None})

    def subscribe(self, patterns: Iterable[str]) -> Subscriber:
        if not self.pub:
            raise ZsupError(f"no events endpoint known for {self.bus}: give --pub or set ZSUP_PUB")
        return Subscriber(self.pub, list(patterns), curve=self.curve)

    def emit(self, result: Any, human: Callable[[Any], str | None] | str | None = None) -> None:
        """Print a result: raw JSON with --json, else what `human` makes of it."""
        if self.json:
            print(json.dumps(result, indent=2))
            return
        text = human(result) if callable(human) else human
        if text:
            print(text)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def resolve_endpoints(args: argparse.Namespace) -> tuple[str, str | None]:
    """(command endpoint, events endpoint): --bus/--pub, then --state-dir, then ZSUP_BUS/ZSUP_PUB,
    then the default state dir. The events endpoint of an ipc bus is its sibling socket."""
    if args.bus:
        return args.bus, args.pub or os.environ.get("ZSUP_PUB") or _sibling_pub(args.bus)
    if args.state_dir:
        bus, pub = default_endpoints(args.state_dir)
        return bus, args.pub or pub
    env_bus = os.environ.get("ZSUP_BUS")
    bus, pub = default_endpoints()
    if env_bus and not os.environ.get("ZSUP_PUB"):
        pub = _sibling_pub(env_bus)
    return bus, args.pub or pub


def _sibling_pub(bus: str) -> str | None:
    if bus.startswith("ipc://") and bus.endswith("/zsupd.sock"):
        return bus[: -len("zsupd.sock")] + "zsupd-pub.sock"
    return None


def _name_args(ctl: Ctl) -> dict:
    return {"name": ctl.args.name, "session": getattr(ctl.args, "session", None)}


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
            row["state"],
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
    n = ctl.args.n.strip()
    if not re.fullmatch(r"[-+=]?\d+", n):
        raise UsageError(f"scale: bad count {n!r} (use 3, +2, -1 or =3)")
    return _scale(ctl, n if n[0] in "+-=" else f"={n}")


def cmd_add(ctl: Ctl) -> int:
    return _scale(ctl, f"+{ctl.args.n}")


def cmd_sub(ctl: Ctl) -> int:
    return _scale(ctl, f"-{ctl.args.n}")


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
        ("processes", f"{info['running']} running / {info['numprocesses']} wanted"),
        ("cmd", cmdline),
    ]
    text = "\n".join(f"{k + ':':<11} {v}" for k, v in head)
    procs = info.get("processes") or []
    if procs:
        rows = [[p["pid"], p["os_pid"], p["state"] + (" (commit)" if p.get("committed") else ""),
                 human_duration(p.get("uptime"))] for p in procs]
        text += "\n\n" + format_table(["PID", "OS PID", "STATE", "UPTIME"], rows)
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


def parse_env(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"bad --env {text!r}: use NAME=VALUE")
    name, value = text.split("=", 1)
    return name, value


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


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def cmd_send(ctl: Ctl) -> int:
    """Write to a process's stdin; a newline is added, like echo, unless --no-newline."""
    text = " ".join(ctl.args.text)
    if not ctl.args.no_newline:
        text += "\n"
    r = ctl.call("send", pid=ctl.args.pid, data=text)
    ctl.emit(r, lambda r: f"sent {_plural(r['bytes'], 'byte', 'bytes')} to process {r['pid']}")
    return 0


# ------------------------------------------------------------------------------ daemon


def cmd_version(ctl: Ctl) -> int:
    r = ctl.call("version")
    ctl.emit({"zsupctl": __version__, **r},
             lambda r: f"zsupctl {__version__}, zsupd {r['version']} (bus protocol {r['protocol']})")
    return 0


def cmd_ping(ctl: Ctl) -> int:
    ctl.emit(ctl.call("ping"), lambda r: str(r))
    return 0


def cmd_reopen_logs(ctl: Ctl) -> int:
    ctl.emit(ctl.call("reopen_logs"), "log files reopened")
    return 0


# ------------------------------------------------------------------------------ watch


def cmd_watch(ctl: Ctl) -> int:
    """Print events as they come: `HH:MM:SS <job> | <topic> <summary>`; Ctrl-C ends it.

    Without a pattern: job, process and daemon events. Output (`io.`) and stats are shown
    only when a pattern asks for them: they are a flood, and subscribing to stats makes zsupd
    sample them.
    """
    patterns = [p for p in ctl.args.patterns if p not in ("", ".")] or ["job.", "proc.", "sys."]
    sessions = set(ctl.call("sessions")) | {"default"}
    patterns = [gaffer_pattern(p, sessions) for p in patterns]
    want_io = any(p.startswith("io") for p in patterns)
    with ctl.subscribe(patterns) as sub:
        for event in sub:
            if event.topic.startswith("io.") and not want_io:
                continue
            for line in describe_event(event):
                if ctl.json:
                    print(json.dumps(_event_json(event)), flush=True)
                    break
                print(line, flush=True)
    return 0


def gaffer_pattern(pattern: str, sessions: set[str]) -> str:
    """Read gaffer's session-less patterns: `proc.dummy` and `proc.dummy.spawn` mean job dummy
    of session default, unless `dummy` is the name of a session."""
    parts = pattern.split(".")
    if parts[0] in EVENT_KINDS and len(parts) in (2, 3) and parts[1] and parts[1] not in sessions:
        return ".".join([parts[0], "default"] + parts[1:])
    return pattern


def describe_event(event: Event) -> list[str]:
    """The watch lines of one event (one per output line for io events)."""
    stamp = time.strftime("%H:%M:%S")
    msg = event.msg
    who = msg.get("job") or ("zsupd" if event.topic.startswith("sys.") else "-")
    if event.data is not None:
        return [f"{stamp} {who} | {event.topic} {line.decode('utf-8', 'replace').rstrip(chr(10))}"
                for line in event.lines()]
    return [f"{stamp} {who} | {event.topic} {summarize(event.topic, msg)}".rstrip()]


def summarize(topic: str, msg: dict) -> str:
    """A few words about an event, the ones an operator looks for first."""
    kind, event = topic.split(".", 1)[0], msg.get("event", "")
    if kind == "proc":
        if event == "flap":
            if msg.get("gave_up") or msg.get("retry_in") is None:
                return f"flapping: gave up after {msg.get('attempt')} attempts"
            return f"flapping: attempt {msg.get('attempt')}, retry in {msg.get('retry_in')}s"
        text = f"pid {msg.get('pid')} (os pid {msg.get('os_pid')})"
        if event == "exit":
            if msg.get("term_signal"):
                text += f" killed by {signal_name(msg['term_signal'])}"
            else:
                text += f" exit code {msg.get('exit_code')}"
        if msg.get("reason"):
            text += f" ({msg['reason']})"
        return text
    if kind == "job":
        return f"{msg.get('job', '')}" + (f" ({msg['reason']})" if msg.get("reason") else "")
    if kind == "stats":
        return f"cpu {msg.get('cpu', 0):.1f}% mem {msg.get('mem', 0):.1f}% rss {human_bytes(msg.get('rss'))}"
    if kind == "sys":
        details = [f"{k}: {', '.join(map(str, v))}" for k, v in msg.items() if isinstance(v, list) and v]
        if msg.get("message"):
            details.append(str(msg["message"]))
        return "; ".join(details)
    return ""


def _event_json(event: Event) -> dict:
    out = {"topic": event.topic, "msg": event.msg}
    if event.data is not None:
        out["lines"] = [line.decode("utf-8", "replace") for line in event.lines()]
    return out


# ------------------------------------------------------------------------------ output: tail, logs


class LinePrinter:
    """Print output lines: `label stderr` to our stderr, the rest to stdout.

    Lines get a `<pid> | ` prefix once more than one process is involved (decided at the
    start, switched on when a new process shows up). With --json, one JSON object per line.
    """

    def __init__(self, json_mode: bool, pids: Iterable[int], timestamps: bool = False):
        self.json = json_mode
        self.pids = set(pids)
        self.timestamps = timestamps

    def print(self, pid: int, label: str, seq: int, text: str, when: float | None = None) -> None:
        self.pids.add(pid)
        if self.json:
            record = {"pid": pid, "label": label, "seq": seq, "line": text.rstrip("\n")}
            if when is not None:
                record["time"] = when
            print(json.dumps(record), flush=True)
            return
        prefix = f"{pid} | " if len(self.pids) > 1 else ""
        if self.timestamps and when is not None:
            prefix = dt.datetime.fromtimestamp(when).isoformat(timespec="milliseconds") + " " + prefix
        stream = sys.stderr if label == "stderr" else sys.stdout
        stream.write(prefix + text.rstrip("\n") + "\n")
        stream.flush()


class LiveFollower:
    """Joins stored output with live `io.*` events, without gap or duplicate.

    `last[(pid, label)]` is the seq of the last line printed. A live line at or below it is
    dropped; one beyond `last + 1` first fetches the missing lines from the ring
    (`read_output`), which covers lines published before the subscription was live.
    """

    def __init__(self, ctl: Ctl, printer: LinePrinter, labels: set[str] | None):
        self.ctl = ctl
        self.printer = printer
        self.labels = labels
        self.last: dict[tuple[int, str], int] = {}

    def seen(self, pid: int, label: str, seq: int) -> None:
        key = (pid, label)
        self.last[key] = max(seq, self.last.get(key, 0))

    def handle(self, event: Event) -> None:
        if event.data is None:
            return
        pid, label, seq = event.msg["pid"], event.msg["label"], event.msg["seq"]
        if self.labels is not None and label not in self.labels:
            return
        last = self.last.get((pid, label), 0)
        if seq > last + 1:
            self._fill(pid, label, last, seq)
            last = self.last.get((pid, label), 0)
        for i, line in enumerate(event.lines()):
            if seq + i > last:
                self.printer.print(pid, label, seq + i, line.decode("utf-8", "replace"), time.time())
                self.seen(pid, label, seq + i)

    def _fill(self, pid: int, label: str, last: int, upto: int) -> None:
        try:
            ring = self.ctl.call("read_output", pid=pid, label=label, since=last)
        except NotFound:
            return  # the process is gone: what the ring held is lost to us
        for line in ring["lines"]:
            if line["seq"] < upto:
                self.printer.print(pid, label, line["seq"], line["data"])
                self.seen(pid, label, line["seq"])

    def run(self, sub: Subscriber, first: Event | None) -> int:
        if first is not None:
            self.handle(first)
        for event in sub:
            self.handle(event)
        return 0


def _wait_live(sub: Subscriber) -> Event | None:
    """Give the new subscription a moment to reach zsupd (ZeroMQ's slow joiner); keep what
    arrives meanwhile, it belongs to the live stream."""
    return sub.recv(timeout=LIVE_WAIT)


def _io_prefix(job: str) -> str:
    return f"io.{job}."


def cmd_tail(ctl: Ctl) -> int:
    """The last lines of each running process of a job from the ring buffer, then live output."""
    info = ctl.call("info", **_name_args(ctl))
    sub = ctl.subscribe([_io_prefix(info["job"])])  # first: nothing published from now on is missed
    with sub:
        first = _wait_live(sub)
        info = ctl.call("info", **_name_args(ctl))  # the processes may have changed meanwhile
        procs = [p for p in info["processes"] if p["state"] != "exited"]
        labels = {ctl.args.label} if ctl.args.label else None
        printer = LinePrinter(ctl.json, (p["pid"] for p in procs))
        follower = LiveFollower(ctl, printer, labels)
        for proc in procs:
            for label in proc["labels"]:
                if labels is not None and label not in labels:
                    continue
                ring = _read_ring(ctl, proc["pid"], label, ctl.args.lines)
                for line in ring:
                    printer.print(proc["pid"], label, line["seq"], line["data"])
                # Even with -n 0, or an empty ring: nothing up to last_seq is shown live again.
                follower.seen(proc["pid"], label, proc["last_seq"].get(label, 0))
                if ring:
                    follower.seen(proc["pid"], label, ring[-1]["seq"])
        if ctl.args.no_follow:
            return 0
        return follower.run(sub, first)


def _read_ring(ctl: Ctl, pid: int, label: str, limit: int) -> list[dict]:
    if limit <= 0:
        return []
    try:
        return ctl.call("read_output", pid=pid, label=label, since=0, limit=limit)["lines"]
    except NotFound:
        return []


def cmd_logs(ctl: Ctl) -> int:
    """Read a job's output back from its log files; with -f, go on with live output."""
    args = ctl.args
    sub = ctl.subscribe([_io_prefix(_full_name(args.name, args.session))]) if args.follow else None
    try:
        first = _wait_live(sub) if sub is not None else None
        found = ctl.call("log_paths", name=args.name, label=args.label, session=args.session)
        if not found.get("log", True) and not args.follow:
            raise ZsupError(f"logging is off for {found.get('job', args.name)}")
        records = read_job_logs(found["paths"], args.since, args.lines)
        running: set[int] = set()
        if sub is not None:
            running = set(ctl.call("pids", name=args.name, session=args.session))
        printer = LinePrinter(ctl.json, {r.pid for r, _ in records} | running, args.timestamps)
        labels = {args.label} if args.label else None
        follower = LiveFollower(ctl, printer, labels)
        for record, label in records:
            printer.print(record.pid, label, record.seq, record.line, record.time)
            if record.seq is not None:  # unknown only in the oldest lines (docs/logs.md)
                follower.seen(record.pid, label, record.seq)
        if sub is None:
            return 0
        return follower.run(sub, first)
    finally:
        if sub is not None:
            sub.close()


def read_job_logs(paths: dict[str, list[str]], since: float | None, limit: int | None) -> list[tuple[LogRecord, str]]:
    """Records of every label, merged by time (labels have their own files), the last `limit`."""
    merged: list[tuple[LogRecord, str]] = []
    for label, files in paths.items():
        merged += [(r, label) for r in read_log(files, since, limit)]
    merged.sort(key=lambda item: item[0].time)
    return merged[-limit:] if limit is not None and limit > 0 else ([] if limit == 0 else merged)


def _full_name(name: str, session: str | None) -> str:
    if "." in name:
        return name
    return f"{session or 'default'}.{name}"


# ------------------------------------------------------------------------------ parser


class UsageError(Exception):
    """A bad argument found after parsing (exit status 2, as argparse's own)."""


def _global_options(parser: argparse.ArgumentParser) -> None:
    """The options accepted both before and after the subcommand (SUPPRESS: see the module doc)."""
    g = parser.add_argument_group("global options")
    sup = argparse.SUPPRESS
    g.add_argument("--bus", metavar="ENDPOINT", default=sup,
                   help="zsupd's command endpoint (default: $ZSUP_BUS, else ipc://<state_dir>/zsupd.sock)")
    g.add_argument("--pub", metavar="ENDPOINT", default=sup,
                   help="zsupd's events endpoint (default: $ZSUP_PUB, else next to the command socket)")
    g.add_argument("--state-dir", metavar="DIR", default=sup,
                   help="talk to the zsupd whose state dir is DIR (default: $ZSUP_STATE_DIR or ~/.zsup)")
    g.add_argument("--json", action="store_true", default=sup, help="print raw JSON results, for scripts")
    g.add_argument("--timeout", type=float, metavar="SECONDS", default=sup,
                   help=f"how long to wait for zsupd's answer (default: {DEFAULT_TIMEOUT:g})")
    g.add_argument("--curve-key", metavar="SECRET_FILE", default=sup,
                   help="for a tcp:// bus: this client's CURVE secret key file (.key_secret)")
    g.add_argument("--server-key", metavar="PUBLIC_FILE", default=sup,
                   help="for a tcp:// bus: zsupd's CURVE public key file (.key)")


GLOBAL_DEFAULTS = {"bus": None, "pub": None, "state_dir": None, "json": False, "timeout": DEFAULT_TIMEOUT,
                   "curve_key": None, "server_key": None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Control a running zsupd over its bus (gafferctl's commands, and more).",
        epilog="Run `zsupctl COMMAND --help` for a command's options. Documentation: docs/zsupctl.md")
    _global_options(parser)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[Ctl], int], help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help, description=help, aliases=list(aliases))
        _global_options(p)
        p.set_defaults(func=func)
        return p

    def job(p: argparse.ArgumentParser, optional: bool = False) -> None:
        p.add_argument("name", metavar="NAME", nargs="?" if optional else None,
                       help="a job: NAME (session default) or SESSION.NAME")
        p.add_argument("--session", help="the job's session, if NAME has none")

    p = add("status", cmd_status, "a table of every job: state, processes, uptime, CPU, memory")
    p = add("processes", cmd_processes, "list the loaded jobs")
    p.add_argument("--session", help="only this session's jobs")
    p = add("load_process", cmd_load_process, "load a job (JSON object) or jobs (JSON list) from FILE or stdin",
            aliases=["load-process", "load"])
    p.add_argument("file", metavar="FILE", help="a JSON file, or - for stdin")
    p.add_argument("--session", help="load the jobs into this session")
    p.add_argument("--no-start", action="store_true", help="load without starting")
    job(add("unload", cmd_unload, "stop a job's processes and remove the job"))
    job(add("start", cmd_start, "start a job's processes"))
    job(add("stop", cmd_stop, "stop a job's processes (the job stays loaded)"))
    p = add("scale", cmd_scale, "set (N, =N) or change (+N, -N) a job's number of processes")
    job(p)
    p.add_argument("n", metavar="N", help="3 or =3 sets the count; +2 adds two; -1 removes one")
    for name, func, verb in (("add", cmd_add, "start N more"), ("sub", cmd_sub, "stop N of the")):
        p = add(name, func, f"{verb} processes of a job")
        job(p)
        p.add_argument("n", metavar="N", type=_positive_int, help="how many processes")
    p = add("reload", cmd_reload, "restart a job's processes; without NAME, reload zsupd's config file")
    job(p, optional=True)
    job(add("info", cmd_info, "a job's state, command and processes"))
    job(add("get", cmd_get, "a job's config as JSON (what load_process reads)"))
    job(add("stats", cmd_stats, "CPU and memory of each process of a job, and their totals"))
    job(add("pids", cmd_pids, "zsup's pids of a job's processes (of every job without NAME)"), optional=True)
    add("sessions", cmd_sessions, "list the sessions")
    p = add("commit", cmd_commit, "start one extra process of a job, not restarted; print its pid")
    job(p)
    p.add_argument("--graceful-timeout", type=float, metavar="SECONDS", help="time it gets to stop when asked")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", type=_env_arg, help="extra environment")
    p = add("kill", cmd_kill, "send a signal to a process (PID, a number) or to every process of a job (NAME)")
    p.add_argument("target", metavar="PID|NAME")
    p.add_argument("signal", metavar="SIG", nargs="?", default="TERM", help="a name (HUP, SIGHUP) or number (default TERM)")
    p.add_argument("--session", help="the job's session, if NAME has none")
    p = add("send", cmd_send, "write TEXT and a newline to a process's stdin (redirect_input jobs)")
    p.add_argument("pid", metavar="PID", type=int)
    p.add_argument("text", metavar="TEXT", nargs="+", help="words are joined with a space, as echo does")
    p.add_argument("--no-newline", "-n", action="store_true", help="do not add a newline")
    p = add("watch", cmd_watch, "print events live (HH:MM:SS job | topic summary) until Ctrl-C")
    p.add_argument("patterns", metavar="PATTERN", nargs="*",
                   help="topic patterns, e.g. proc.default.web, job., io.default.web. (default: job, proc, sys events)")
    p = add("tail", cmd_tail, "recent output of a job's processes, then live output until Ctrl-C")
    job(p)
    p.add_argument("--label", help="only this stream (default: all; stderr goes to stderr)")
    p.add_argument("-n", "--lines", type=_count, default=10, metavar="N", help="recent lines per stream (default 10)")
    p.add_argument("--no-follow", action="store_true", help="print the recent lines and exit")
    p = add("logs", cmd_logs, "a job's output read back from its log files; -f follows live")
    job(p)
    p.add_argument("--label", help="only this stream (default: all; stderr goes to stderr)")
    p.add_argument("--since", type=parse_since, metavar="TIME", help="ISO time or age (30s, 10m, 2h, 1d)")
    p.add_argument("-n", "--lines", type=_count, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="then follow live output until Ctrl-C")
    p.add_argument("-t", "--timestamps", action="store_true", help="show when each line was received")
    add("version", cmd_version, "zsupctl's and zsupd's versions")
    add("ping", cmd_ping, "check that zsupd answers")
    add("reopen-logs", cmd_reopen_logs, "reopen the log files (after logrotate moved them)", aliases=["reopen_logs"])
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return int(text)


def _env_arg(text: str) -> str:
    parse_env(text)
    return text


STREAMING = {cmd_watch, cmd_tail, cmd_logs}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    bus, pub = resolve_endpoints(args)
    ctl = Ctl(args, bus, pub)
    try:
        return args.func(ctl)
    except UsageError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except ZsupError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.func in STREAMING else 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error; keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        ctl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
