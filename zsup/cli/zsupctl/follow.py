"""zsupctl watch, tail and logs: live events and output joined with stored output (see the
package's doc for how gaps and duplicates are avoided).

A SUB socket cannot tell that zsupd died: it just receives nothing, and reconnects quietly to
a zsupd started again at the same endpoint. So `follow` pings zsupd over the command socket
whenever no event came for `HEARTBEAT` seconds, and at least that often while events come
(they may be a backlog read after zsupd stalled). When the ping fails it says so on stderr,
waits for zsupd to answer again (ZeroMQ reconnects both sockets by itself), says so, and lets
the command catch up: `tail` and `logs -f` read what was missed from the ring (`read_output`
since the last seq shown). A process is known by (pid, os_pid): a zsupd started again numbers
its processes from 1 again, and their lines must not be taken for ones already shown.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Callable, Iterable

from zsup.bus.client import Subscriber
from zsup.bus.parse import signal_name
from zsup.bus.protocol import Event
from zsup.bus.topics import job_io_prefix
from zsup.cli.zsupctl.context import EVENT_KINDS, LIVE_WAIT, PROG, Ctl, _full_name, _name_args
from zsup.cli.zsupctl.format import human_bytes
from zsup.core.logfiles import LogRecord, read_log
from zsup.errors import NotFound, Unavailable, ZsupError

HEARTBEAT = 1.0  # seconds without an event after which zsupd is asked whether it is there
PING_TIMEOUT = 2.0  # zsupd answers ping within milliseconds, even while busy


# ------------------------------------------------------------------------------ liveness


def follow(ctl: Ctl, sub: Subscriber, handle: Callable[[Event], None],
           on_back: Callable[[], None] | None = None, first: Event | None = None) -> int:
    """Pass `first` (an event already read), then every event, to `handle`, for ever (Ctrl-C
    ends it). When zsupd stops answering, say so on stderr and wait for it; when it answers
    again, say so and call `on_back`."""
    last_ping = time.monotonic()
    while True:
        if first is not None:
            event, first = first, None
        else:
            event = sub.recv(timeout=HEARTBEAT)
        if event is not None:
            try:
                handle(event)
            except Unavailable:
                # filling a gap (lines the subscription dropped) met a zsupd that stopped
                # answering: the ping below says so, and on_back fetches what was missed
                pass
            else:
                # a backlog of events still being read says nothing of zsupd now: ask it anyway
                if time.monotonic() - last_ping < HEARTBEAT:
                    continue
        last_ping = time.monotonic()
        if _answers(ctl, PING_TIMEOUT):
            continue
        _say(f"zsupd is not answering at {ctl.bus}; waiting for it to come back (Ctrl-C to stop)")
        while not _answers(ctl, PING_TIMEOUT):
            pass
        _say("zsupd is back; resuming" + ("" if on_back else " (events meanwhile are not shown)"))
        if on_back is not None:
            on_back()


def _answers(ctl: Ctl, timeout: float) -> bool:
    try:
        return ctl.client.request("ping", timeout=timeout) == "pong"
    except Unavailable:
        return False
    except ZsupError:  # e.g. the endpoint cannot be connected to now: not a busy loop
        time.sleep(timeout)
        return False


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


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

    def show(event: Event) -> None:
        if event.topic.startswith("io.") and not want_io:
            return
        for line in describe_event(event):
            if ctl.json:
                print(json.dumps(_event_json(event)), flush=True)
                break
            print(line, flush=True)

    with ctl.subscribe(patterns) as sub:
        return follow(ctl, sub, show)


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
        if event == "spawn_error":
            text = f"cannot spawn: {msg.get('error')}"
        elif event == "ready":
            text += f" ready after {msg.get('after')}s ({msg.get('check')})"
        elif event == "hook":
            text += f" {msg.get('hook')} " + (f"failed: {msg['error']}" if msg.get("error") else "ok")
        return text
    if kind == "job":
        extra = ""
        if event == "exited":
            extra = f" exit codes {', '.join(map(str, msg.get('exit_codes') or []))}"
        elif event == "roll":
            extra = f" rolling restart {msg.get('phase')} {msg.get('replaced', 0)}/{msg.get('total', 0)}"
        return f"{msg.get('job', '')}{extra}" + (f" ({msg['reason']})" if msg.get("reason") else "")
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
    `os_pids[pid]` tells processes apart across a restart of zsupd (pids start at 1 again).
    """

    def __init__(self, ctl: Ctl, printer: LinePrinter, labels: set[str] | None):
        self.ctl = ctl
        self.printer = printer
        self.labels = labels
        self.last: dict[tuple[int, str], int] = {}
        self.os_pids: dict[int, int] = {}

    def know(self, pid: int, os_pid: int | None) -> None:
        """Record which OS process `pid` is; another one than before starts from seq 0."""
        if os_pid is None:
            return
        if self.os_pids.setdefault(pid, os_pid) != os_pid:
            self.os_pids[pid] = os_pid
            for key in [k for k in self.last if k[0] == pid]:
                del self.last[key]

    def seen(self, pid: int, label: str, seq: int) -> None:
        key = (pid, label)
        self.last[key] = max(seq, self.last.get(key, 0))

    def handle(self, event: Event) -> None:
        if event.data is None:
            return
        pid, label, seq = event.msg["pid"], event.msg["label"], event.msg["seq"]
        if self.labels is not None and label not in self.labels:
            return
        self.know(pid, event.msg.get("os_pid"))
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

    def catch_up(self, info: dict) -> None:
        """After zsupd was away: print what the job's processes wrote meanwhile (what their
        rings still hold), as `info` (the job's info) shows them now."""
        for proc in info["processes"]:
            pid = proc["pid"]
            self.know(pid, proc.get("os_pid"))
            for label, newest in proc.get("last_seq", {}).items():
                if self.labels is not None and label not in self.labels:
                    continue
                last = self.last.get((pid, label), 0)
                if newest > last:
                    self._fill(pid, label, last, newest + 1)

    def run(self, sub: Subscriber, first: Event | None, name_args: dict) -> int:
        def on_back() -> None:
            try:
                self.catch_up(self.ctl.call("info", **name_args))
            except NotFound:
                pass  # not loaded (yet) in this zsupd: its lines come live when it is

        # `first` goes through follow too: a zsupd gone while it fills a gap is waited for
        return follow(self.ctl, sub, self.handle, on_back, first)


def _wait_live(sub: Subscriber) -> Event | None:
    """Give the new subscription a moment to reach zsupd (ZeroMQ's slow joiner); keep what
    arrives meanwhile, it belongs to the live stream."""
    return sub.recv(timeout=LIVE_WAIT)


def cmd_tail(ctl: Ctl) -> int:
    """The last lines of each running process of a job from the ring buffer, then live output.

    Once subscribed, a zsupd that stops answering while the rings are read is waited for like
    one that stops later (`follow`): what was not shown yet comes from the rings when it is
    back, at most the last `-n` lines of each.
    """
    info = ctl.call("info", **_name_args(ctl))
    sub = ctl.subscribe([job_io_prefix(info["job"])])  # first: nothing published from now on is missed
    with sub:
        first = _wait_live(sub)
        labels = {ctl.args.label} if ctl.args.label else None
        try:
            info = ctl.call("info", **_name_args(ctl))  # the processes may have changed meanwhile
        except Unavailable:
            if ctl.args.no_follow:
                raise
        procs = [p for p in info["processes"] if p["state"] != "exited"]
        printer = LinePrinter(ctl.json, (p["pid"] for p in procs))
        follower = LiveFollower(ctl, printer, labels)
        try:
            _print_rings(ctl, follower, procs, labels)
        except Unavailable:
            if ctl.args.no_follow:
                raise
        if ctl.args.no_follow:
            return 0
        return follower.run(sub, first, _name_args(ctl))


def _print_rings(ctl: Ctl, follower: LiveFollower, procs: list[dict], labels: set[str] | None) -> None:
    """The last `-n` lines of each process's rings, marked as seen for the live stream."""
    for proc in procs:
        follower.know(proc["pid"], proc["os_pid"])
        for label in proc["labels"]:
            if labels is not None and label not in labels:
                continue
            newest = proc["last_seq"].get(label, 0)
            # what a catch-up would show if the read below fails: no more than -n lines
            follower.seen(proc["pid"], label, max(0, newest - max(ctl.args.lines, 0)))
            ring = _read_ring(ctl, proc["pid"], label, ctl.args.lines)
            for line in ring:
                follower.printer.print(proc["pid"], label, line["seq"], line["data"])
            # Even with -n 0, or an empty ring: nothing up to last_seq is shown live again.
            follower.seen(proc["pid"], label, newest)
            if ring:
                follower.seen(proc["pid"], label, ring[-1]["seq"])


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
    sub = ctl.subscribe([job_io_prefix(_full_name(args.name, args.session))]) if args.follow else None
    try:
        first = _wait_live(sub) if sub is not None else None
        found = ctl.call("log_paths", name=args.name, label=args.label, session=args.session)
        if not found.get("log", True) and not args.follow:
            raise ZsupError(f"logging is off for {found.get('job', args.name)}")
        records = read_job_logs(found["paths"], args.since, args.lines)
        running: list[dict] = []
        if sub is not None:
            try:
                running = [p for p in ctl.call("info", name=args.name, session=args.session)["processes"]
                           if p["state"] != "exited"]
            except Unavailable:
                pass  # stalled since log_paths answered: follow waits for it, then catches up
        printer = LinePrinter(ctl.json, {r.pid for r, _ in records} | {p["pid"] for p in running},
                              args.timestamps)
        labels = {args.label} if args.label else None
        follower = LiveFollower(ctl, printer, labels)
        for proc in running:
            follower.know(proc["pid"], proc["os_pid"])
        # A line older than the running process of its pid is another process's (a zsupd
        # started again numbers from 1 again): it says nothing of what that process has shown.
        started = {p["pid"]: p["started"] for p in running}
        for record, label in records:
            printer.print(record.pid, label, record.seq, record.line, record.time)
            # seq is unknown only in the oldest lines (docs/logs.md)
            if record.seq is not None and record.time >= started.get(record.pid, 0) - 1:
                follower.seen(record.pid, label, record.seq)
        if sub is None:
            return 0
        return follower.run(sub, first, {"name": args.name, "session": args.session})
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
