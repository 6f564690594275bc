"""The shim that runs plugins written for gafferd (``app.start(loop, manager)``) in zsupd.

- ``from gaffer import Plugin`` works: when no real ``gaffer`` package is importable, a small
  module ``gaffer`` whose ``Plugin`` is zsup's is put in ``sys.modules`` before the plugins are
  imported (install_shim).
- An app whose ``start`` takes two arguments is gaffer-style: it is started in its own thread
  (so it may call the manager at once: zsupd answers the bus meanwhile) with ``loop=None``
  (zsupd has no pyuv loop; a plugin that puts timers or handles on it must use a thread) and
  ``manager``, a GafferManager: gafferd's Manager methods over zsupd's bus.
- ``manager.<method>(...)`` takes gafferd's Manager arguments (job names as
  ``session.name``, ``sessionid=``) and answers with the bus command's result (zsup's
  shapes: docs/bus.md), e.g. ``jobs()`` the list of names, ``scale(name, n)``
  ``{"job", "numprocesses"}``. The methods: MANAGER_METHODS. Errors raise ZsupError.
- ``manager.events.subscribe(evtype, listener)`` (``unsubscribe``, ``subscribe_once``) calls
  ``listener(evtype, msg)`` for gaffer's manager events (names as on gaffer's channel:
  zsup.bus.gaffer_events.channel_event), ``"."`` for all, a prefix such as ``"job.S.N"`` for
  every event under it; from one thread per manager, which a slow listener holds up.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import threading
import types
from typing import Callable

from zsup.bus.gaffer_events import channel_event

log = logging.getLogger("zsupd.plugins")


def install_shim(plugin_class: type) -> None:
    """Make ``from gaffer import Plugin`` give `plugin_class`, unless a real gaffer exists."""
    if "gaffer" in sys.modules or importlib.util.find_spec("gaffer") is not None:
        return
    shim = types.ModuleType("gaffer", "zsup's stand-in for gaffer, for gafferd plugins")
    shim.Plugin = plugin_class
    sys.modules["gaffer"] = shim


def is_gaffer_style(app) -> bool:
    try:
        params = inspect.signature(app.start).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 2


class GafferEvents:
    """gaffer's ``manager.events`` (an EventEmitter) fed from zsupd's event socket."""

    def __init__(self, subscriber_factory: Callable):
        self._make = subscriber_factory
        self._lock = threading.Lock()
        self._listeners: dict[str, list[tuple[Callable, bool]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, evtype: str, listener: Callable, once: bool = False) -> None:
        key = evtype.rstrip(".") or "."
        with self._lock:
            self._listeners.setdefault(key, []).append((listener, once))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="zsup-gaffer-plugin-events")
                self._thread.start()

    def subscribe_once(self, evtype: str, listener: Callable) -> None:
        self.subscribe(evtype, listener, once=True)

    def unsubscribe(self, evtype: str, listener: Callable, once: bool = False) -> None:
        key = evtype.rstrip(".") or "."
        with self._lock:
            entries = self._listeners.get(key, [])
            self._listeners[key] = [e for e in entries if e[0] is not listener]

    def unsubscribe_once(self, evtype: str, listener: Callable) -> None:
        self.unsubscribe(evtype, listener)

    def _targets(self, name: str) -> list[Callable]:
        parts = name.split(".")
        keys = ["."] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        out = []
        with self._lock:
            for key in keys:
                entries = self._listeners.get(key, [])
                out += [fn for fn, _ in entries]
                if any(once for _, once in entries):
                    self._listeners[key] = [e for e in entries if not e[1]]
        return out

    def _run(self) -> None:
        sub = self._make(["job", "proc"])
        try:
            while not self._stop.is_set():
                ev = sub.recv(timeout=0.5)
                if ev is None:
                    continue
                for name, fields in channel_event(ev.topic, ev.msg):
                    for listener in self._targets(name):
                        try:
                            listener(name, dict(fields, event=name))
                        except Exception:
                            log.exception("a gaffer plugin's listener for %s failed", name)
        finally:
            sub.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _job(pname: str) -> dict:
    session, _, name = str(pname).rpartition(".")
    return {"name": name, "session": session or "default"}


def _session(kw: dict) -> dict:
    return {"session": kw["sessionid"]} if kw.get("sessionid") else {}


#: gafferd Manager method -> its bus call (args, kwargs -> (command, bus arguments)).
MANAGER_METHODS: dict[str, Callable[..., tuple[str, dict]]] = {
    "sessions": lambda: ("sessions", {}),
    "jobs": lambda sessionid=None: ("jobs", _session({"sessionid": sessionid})),
    "pids": lambda sessionid=None: ("pids", _session({"sessionid": sessionid})),
    "load": lambda config, sessionid=None, env=None, start=True: (
        "load", {"config": dict(config), "session": sessionid or "default", "env": env,
                 "start": start}),
    "update": lambda config, sessionid=None, env=None, start=False: (
        "update", {"config": dict(config), "session": sessionid or "default", "env": env,
                   "start": start}),
    "unload": lambda name, sessionid=None: (
        "unload", {"name": name, "session": sessionid or "default"} if sessionid else _job(name)),
    "reload": lambda name, sessionid=None: (
        "reload", {"name": name, "session": sessionid or "default"} if sessionid else _job(name)),
    "start_job": lambda name: ("start_job", _job(name)),
    "stop_job": lambda name: ("stop_job", _job(name)),
    "scale": lambda name, n: ("scale", {**_job(name), "n": n}),
    "commit": lambda name, graceful_timeout=None, env=None: (
        "commit", {**_job(name), "graceful_timeout": graceful_timeout, "env": env}),
    "info": lambda name: ("info", _job(name)),
    "stats": lambda name: ("stats", _job(name)),
    "killall": lambda name, sig: ("killall", {**_job(name), "sig": sig}),
    "get_process": lambda pid: ("get_process", {"pid": int(pid)}),
    "process_stats": lambda pid: ("process_stats", {"pid": int(pid)}),
    "stop_process": lambda pid: ("stop_process", {"pid": int(pid)}),
    "kill": lambda pid, sig: ("kill", {"pid": int(pid), "sig": sig}),
    "send": lambda pid, data, stream=None: ("send", {"pid": int(pid), "data": data}),
}


class GafferManager:
    """What a gafferd plugin's ``start(loop, manager)`` gets as `manager` (module doc)."""

    def __init__(self, ctx):
        self._client = ctx.client(timeout=30)
        self._lock = threading.Lock()
        self.events = GafferEvents(ctx.subscriber)

    def __getattr__(self, name: str):
        to_bus = MANAGER_METHODS.get(name)
        if to_bus is None:
            raise AttributeError(f"gafferd's manager.{name} is not available in zsup "
                                 f"(docs/config.md, 'Plugins written for gafferd')")

        def method(*args, **kwargs):
            cmd, bus_args = to_bus(*args, **kwargs)
            bus_args = {k: v for k, v in bus_args.items() if v is not None}
            with self._lock:
                return self._client.call(cmd, **bus_args)
        method.__name__ = name
        return method

    def close(self) -> None:
        self.events.close()
        with self._lock:
            self._client.close()


class GafferApp:
    """A gaffer-style app as PluginHost drives it: start(ctx) runs ``app.start(None, manager)``
    in a thread; stop() and restart() call the app's and end the manager."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.manager: GafferManager | None = None

    def start(self, ctx) -> None:
        self.manager = GafferManager(ctx)

        def run():
            try:
                self.app.start(None, self.manager)
            except Exception:
                log.exception("plugin %s failed to start", self.name)
        threading.Thread(target=run, daemon=True, name=f"zsup-gaffer-plugin {self.name}").start()

    def restart(self) -> None:
        restart = getattr(self.app, "restart", None)
        if restart is not None:
            restart()

    def stop(self) -> None:
        try:
            stop = getattr(self.app, "stop", None)
            if stop is not None:
                stop()
        finally:
            if self.manager is not None:
                self.manager.close()
