"""What every zsupctl subcommand gets: the options, the bus client (typed methods), output."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from zsup.bus.client import Client, Subscriber, default_endpoints
from zsup.errors import ZsupError

PROG = "zsupctl"
DEFAULT_TIMEOUT = 5.0
# How long tail/logs -f wait for a first live message before reading stored output. The
# subscription usually reaches zsupd within a millisecond over ipc; the gap filling from
# the ring covers the rare case where it takes longer.
LIVE_WAIT = 0.3
EVENT_KINDS = ("job", "proc", "stats", "io")


class UsageError(Exception):
    """A bad argument found after parsing (exit status 2, as argparse's own)."""


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
        """Run a bus command through the client's typed method (arguments checked against the
        declaration), leaving out arguments that are None (the daemon's defaults apply)."""
        return getattr(self.client, cmd)(**{k: v for k, v in args.items() if v is not None})

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


def _full_name(name: str, session: str | None) -> str:
    if "." in name:
        return name
    return f"{session or 'default'}.{name}"
