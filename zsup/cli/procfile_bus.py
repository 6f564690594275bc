"""The `zsup` commands that talk to a running zsupd: load, unload, scale, ps, and export.

Every command speaks the bus (zsup.bus.client.Client), exactly as zsupctl and the HTTP
gateway do; an `http://` endpoint sends the same commands through the HTTP gateway instead
(HttpBus). A connection is made only after the command's arguments are checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.error
import urllib.request
from typing import Any, TextIO

from zsup.bus.client import Client, default_endpoints
from zsup.bus.typed import BusCommands
from zsup.cli.procfile_app import app_name, app_port, apply_options, load_procfile
from zsup.errors import BadRequest, NotFound, Unavailable, ZsupError, error_from_dict
from zsup.services.procfile import parse_concurrency, strip_instance_prefix

PING_TIMEOUT = 3.0  # how long "is zsupd there?" may take before we say it is not
COMMAND_TIMEOUT = 30.0  # a load_session of many jobs is still well within this
SCALE_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_\-]*?)([=+-])(\d+)$")


class HttpBus(BusCommands):
    """Bus commands through the HTTP gateway: POST `<endpoint>/bus/<cmd>` with the args as JSON.

    The gateway answers `{"result": ...}`, or `{"error": {"code", "message"}}` with an error
    status; the bus's own envelope (`{"ok", "result"|"error"}`) is read too, and any other JSON
    on a 2xx answer is taken as the result itself.
    """

    def __init__(self, endpoint: str, timeout: float = COMMAND_TIMEOUT):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def call(self, cmd: str, /, **args: Any) -> Any:
        return self.request(cmd, args)

    def request(self, cmd: str, args: dict | None = None, timeout: float | None = None) -> Any:
        body = json.dumps(args or {}).encode()
        req = urllib.request.Request(f"{self.endpoint}/bus/{cmd}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return self._result(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return self._result(exc.code, exc.read())
        except ValueError as exc:  # not a usable URL
            raise BadRequest(f"--endpoint {self.endpoint}: {exc}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"no zsup HTTP gateway answering at {self.endpoint} ({reason})") from None

    def _result(self, status: int, raw: bytes) -> Any:
        try:
            reply = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError):
            reply = None
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise error_from_dict(reply["error"])
        if isinstance(reply, dict) and ("ok" in reply or set(reply) == {"result"}):
            return reply.get("result")
        if 200 <= status < 300:
            return reply
        raise ZsupError(f"HTTP {status} from {self.endpoint}: {raw[:200].decode('utf-8', 'replace').strip()}")

    def close(self) -> None:
        pass


def connect(args: argparse.Namespace) -> Client | HttpBus:
    """A connection to zsupd that has answered `ping`, or Unavailable.

    Checking first makes "no zsupd" one fast, clear error instead of a timeout in the middle of
    a command, and it means no command is sent to an endpoint that cannot answer.
    """
    endpoint = args.endpoint or default_endpoints()[0]
    if endpoint.startswith(("http://", "https://")):
        conn: Client | HttpBus = HttpBus(endpoint)
    else:
        if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
            raise Unavailable(f"no zsupd at {endpoint} (no such socket; is zsupd running?)")
        curve = None
        if args.curve_key or args.server_key:
            if not (args.curve_key and args.server_key):
                raise BadRequest("--curve-key and --server-key go together")
            from zsup.bus.curve import client_curve
            curve = client_curve(args.curve_key, args.server_key)
        conn = Client(endpoint, timeout=COMMAND_TIMEOUT, curve=curve)
    try:
        conn.request("ping", {}, timeout=PING_TIMEOUT)
    except Unavailable:
        conn.close()
        raise Unavailable(f"no zsupd answering at {endpoint} (is it running?)") from None
    except BaseException:
        conn.close()
        raise
    return conn


def session_jobs(conn, app: str) -> list[str]:
    """The session's jobs (`app.type`), or NotFound when the app is not loaded."""
    names = conn.jobs(session=app)
    if not names:
        raise NotFound(f"no application {app!r} loaded in zsupd")
    return names


def cmd_load(args: argparse.Namespace, out: TextIO) -> int:
    """Load the app as one session with `load_session`: zsupd checks every job before loading
    any and starts them in priority order, so a bad job leaves nothing half-loaded."""
    concurrency = parse_concurrency(args.concurrency)
    procfile = load_procfile(args, args.name)
    if not procfile.processes:
        raise BadRequest(f"{procfile.path}: no process types to load")
    jobs = apply_options(procfile.job_dicts(concurrency, port=app_port(args, procfile)), args.option)
    conn = connect(args)
    try:
        names = conn.load_session(session=procfile.app, configs=jobs)
    finally:
        conn.close()
    counts = ", ".join(f"{job['name']} ({job['numprocesses']})" for job in jobs)
    print(f"Loaded {procfile.app}: {counts}", file=out)
    return 0 if names else 1


def cmd_unload(args: argparse.Namespace, out: TextIO) -> int:
    """Remove the whole session; zsupd stops its processes gracefully."""
    app = app_name(args, args.name)
    conn = connect(args)
    try:
        names = conn.unload_session(session=app)
    finally:
        conn.close()
    print(f"Unloaded {app}: {', '.join(n.partition('.')[2] for n in names)}", file=out)
    return 0


def parse_scale_specs(specs: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """`[APP] web=3 worker+2` -> (APP or None, [("web", "=3"), ("worker", "+2")]).

    The first word is the app when it is not a scale order. Everything is checked before
    anything is sent, so a typo in the last order does not leave the first ones applied.
    """
    app = None
    if specs and not SCALE_RE.match(specs[0]):
        app, specs = specs[0], specs[1:]
    if not specs:
        raise BadRequest("scale: give at least one TYPE=N, TYPE+N or TYPE-N")
    orders = []
    for spec in specs:
        match = SCALE_RE.match(spec)
        if not match:
            raise BadRequest(f"scale: bad order {spec!r} (expected TYPE=N, TYPE+N or TYPE-N)")
        orders.append((match.group(1), match.group(2) + match.group(3)))
    return app, orders


def cmd_scale(args: argparse.Namespace, out: TextIO) -> int:
    """Scale each type with the `scale` bus command ("=3", "+2", "-1" are explicit there)."""
    name, orders = parse_scale_specs(args.specs)
    app = app_name(args, name)
    conn = connect(args)
    try:
        known = [n.partition(".")[2] for n in session_jobs(conn, app)]
        for ptype, _ in orders:
            if ptype not in known:
                raise BadRequest(f"unknown process type {ptype!r} in {app} (known: {', '.join(known)})")
        for ptype, n in orders:
            print(f"Scaling {ptype} processes... ", end="", file=out, flush=True)
            result = conn.scale(name=f"{app}.{ptype}", n=n)
            print(f"done, now running {result['numprocesses']}", file=out, flush=True)
    finally:
        conn.close()
    return 0


def format_uptime(seconds: float) -> str:
    """gaffer's `ps` uptime: M:SS.cc under an hour, H:MM:SS from then on."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}:{rest:05.2f}"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def cmd_ps(args: argparse.Namespace, out: TextIO) -> int:
    """Print the manual's layout, one block per process type (`info` and `stats`)."""
    app = app_name(args, args.name)
    conn = connect(args)
    try:
        for job in session_jobs(conn, app):
            info = conn.info(name=job)
            try:
                stats = conn.stats(name=job)
            except NotFound:
                continue  # unloaded between the two calls
            print(f"=== {info['name']}: `{strip_instance_prefix(info['config']['cmd'])}`", file=out)
            print(f"Total CPU: {stats.get('cpu', 0.0):f} Total MEM: {stats.get('mem', 0.0):.2f}", file=out)
            print(file=out)
            for proc in info["processes"]:
                if proc["state"] == "exited":
                    continue
                note = "" if proc["state"] == "running" else f" ({proc['state']})"
                committed = " (one-off)" if proc.get("committed") else ""
                print(f"{info['name']}.{proc['pid']}: up for {format_uptime(proc['uptime'])}{note}{committed}",
                      file=out)
    finally:
        conn.close()
    return 0


def pub_endpoint(args: argparse.Namespace) -> str:
    """zsupd's event socket: `$ZSUP_PUB`, else the one beside an ipc:// bus socket."""
    from zsup.bus.client import COMMAND_SOCKET, PUB_SOCKET

    endpoint = args.endpoint or default_endpoints()[0]
    if os.environ.get("ZSUP_PUB") and not args.endpoint:
        return os.environ["ZSUP_PUB"]
    if endpoint.startswith("ipc://") and endpoint.endswith(COMMAND_SOCKET):
        return endpoint[: -len(COMMAND_SOCKET)] + PUB_SOCKET
    if os.environ.get("ZSUP_PUB"):
        return os.environ["ZSUP_PUB"]
    raise BadRequest(f"--attach: cannot tell zsupd's event socket from {endpoint}; set ZSUP_PUB")


def running_instance(os_pid: int | None) -> int | None:
    """ZSUP_INSTANCE from a live process's environment (same machine and user), else None."""
    import psutil

    try:
        value = psutil.Process(os_pid).environ().get("ZSUP_INSTANCE") if os_pid else None
        return int(value) if value else None
    except (psutil.Error, ValueError, OSError):
        return None


def attach(args: argparse.Namespace, out: TextIO) -> int:
    """`zsup start --attach [APP]`: print the output and process events of an app loaded in
    zsupd, as `zsup start` prints its own, until Ctrl-C; the app keeps running.

    Lines come from zsupd's event socket (zsup.bus.client.Subscriber); the process's
    instance number comes with its spawn event, or, for a process already running, from its
    environment when this machine lets us read it (else it is labelled with zsup's id).
    """
    import signal

    from zsup.bus.client import Subscriber
    from zsup.cli.procfile_local import Foreground

    app = app_name(args, args.name)
    conn = connect(args)
    try:
        names = session_jobs(conn, app)
        running = [proc for name in names for proc in conn.info(name=name)["processes"]]
    finally:
        conn.close()
    view = Foreground(out, colour=out.isatty() and not os.environ.get("NO_COLOR"),
                      names=[n.partition(".")[2] for n in names])
    for proc in running:
        view.instances[proc["pid"]] = running_instance(proc.get("os_pid")) or proc["pid"]
    previous = {sig: signal.signal(sig, view.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    curve = None
    if args.curve_key and args.server_key:
        from zsup.bus.curve import client_curve
        curve = client_curve(args.curve_key, args.server_key)
    try:
        with Subscriber(pub_endpoint(args), [f"proc.{app}.", f"io.{app}."], curve=curve) as sub:
            view.lines.put(("zsup", None, f"attached to {app} in zsupd (Ctrl-C detaches; the app keeps running)"))
            while not view.stop_requests:
                event = sub.recv(timeout=0.1)
                if event is not None:
                    handler = view.on_io if event.topic.startswith("io.") else view.on_proc
                    handler(event.topic, event.msg, event.data)
                view.drain(0)
        view.drain(0)
        view.write("zsup", None, view.summary())
        out.flush()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
