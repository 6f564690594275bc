"""Readiness and health checks: how a `ready = ...` or `health = ...` option is read, and how
one try of a check is run.

A check is written `KIND:ARG` (or `notify`): `tcp:[HOST:]PORT`, `http:URL`, `cmd:COMMAND`,
`log:REGEX`, `notify`, `delay:SECONDS`. `parse_check` is called by JobSpec.from_dict, so a bad
check is refused at load with the option's name.

Thread rule: `run_probe` blocks (a connect, a request, a command) and so runs only on the
CheckPool's worker threads, never on a loop; `CheckPool.submit` may be called from the
supervisor loop and hands the result back there with `Loop.call_soon`. log, notify and delay
checks are driven by the supervisor itself (zsup/core/lifecycle.py), not probed.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

from zsup.errors import BadRequest

KINDS = ("tcp", "http", "cmd", "log", "notify", "delay")
PROBES = ("tcp", "http", "cmd")  # the kinds run on the worker pool
HEALTH_KINDS = ("tcp", "http", "cmd", "notify")  # notify: only with watchdog_sec
POOL_SIZE = 4


@dataclass(frozen=True)
class Check:
    kind: str
    arg: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    seconds: float = 0.0
    regex: re.Pattern | None = None

    def __str__(self) -> str:
        return self.kind if self.kind == "notify" else f"{self.kind}:{self.arg}"


def parse_check(option: str, value, kinds: tuple[str, ...] = KINDS) -> Check | None:
    """`tcp:8080` -> Check('tcp', ...); None or "" -> None; BadRequest naming `option`."""
    if value is None or value == "":
        return None
    if isinstance(value, Check):
        value = str(value)
    if not isinstance(value, str) or "\0" in value:
        raise BadRequest(f"{option}: expected a check such as tcp:8080, got {value!r}")
    value = value.strip()
    kind, _, arg = value.partition(":")
    kind = kind.strip().lower()
    if kind not in kinds:
        raise BadRequest(f"{option}: unknown check {kind!r} (expected one of {', '.join(kinds)})")
    arg = arg.strip()
    if kind == "notify":
        if arg:
            raise BadRequest(f"{option}: notify takes no argument")
        return Check("notify")
    if not arg:
        raise BadRequest(f"{option}: {kind} needs an argument ({kind}:...)")
    if kind == "tcp":
        host, sep, port = arg.rpartition(":")
        host = host.strip("[]") if sep else "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRequest(f"{option}: expected tcp:[HOST:]PORT with a port 1-65535, got {value!r}")
        return Check("tcp", arg, host=host or "127.0.0.1", port=int(port))
    if kind == "http":
        if not arg.startswith(("http://", "https://")):
            raise BadRequest(f"{option}: expected http:http://HOST:PORT/PATH, got {value!r}")
        return Check("http", arg)
    if kind == "log":
        try:
            return Check("log", arg, regex=re.compile(arg.encode()))
        except re.error as exc:
            raise BadRequest(f"{option}: bad regular expression {arg!r}: {exc}") from None
    if kind == "delay":
        try:
            seconds = float(arg)
        except ValueError:
            seconds = -1.0
        if not math.isfinite(seconds) or not 0 <= seconds <= 86400:
            raise BadRequest(f"{option}: expected delay:SECONDS (0-86400), got {value!r}")
        return Check("delay", arg, seconds=seconds)
    return Check("cmd", arg)


def run_probe(check: Check, timeout: float, env: dict | None = None, cwd: str | None = None) -> str | None:
    """One try of a tcp, http or cmd check: None if it passed, else why not. Blocks up to
    about `timeout` seconds (worker threads only)."""
    import urllib.error  # here: urllib.request and http.client cost a start without http checks
    import urllib.request

    timeout = max(0.05, timeout)
    try:
        if check.kind == "tcp":
            with socket.create_connection((check.host, check.port), timeout=timeout):
                return None
        if check.kind == "http":
            try:
                with urllib.request.urlopen(check.arg, timeout=timeout) as reply:
                    status = reply.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            return None if 200 <= status < 300 else f"{check} answered {status}"
        if check.kind == "cmd":
            done = subprocess.run(check.arg, shell=True, env=env, cwd=cwd, timeout=timeout,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
            return None if done.returncode == 0 else f"{check} exited with {done.returncode}"
    except subprocess.TimeoutExpired:
        return f"{check} timed out after {timeout:g}s"
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return f"{check}: {getattr(exc, 'reason', None) or exc}"
    return f"{check}: not a probe"


class CheckPool:
    """A few worker threads for the blocking checks; results go back to a loop's thread."""

    def __init__(self, size: int = POOL_SIZE):
        self._pool: ThreadPoolExecutor | None = None
        self.size = size

    def submit(self, loop, check: Check, timeout: float, env: dict | None, cwd: str | None,
               done: Callable[[str | None], None]) -> None:
        """Run the probe on a worker; call `done(error_or_None)` in `loop`'s thread."""
        self.call(loop, lambda: run_probe(check, timeout, env, cwd), done, lambda exc: f"{check}: {exc}")

    def call(self, loop, fn: Callable, done: Callable, on_error: Callable) -> None:
        """Run `fn()` on a worker; `done(result)` in `loop`'s thread (`on_error(exc)` if it raised)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # the first check's cost, not the start's

            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="zsup-check")

        def work():
            try:
                result = fn()
            except Exception as exc:  # a worker must never lose its answer
                result = on_error(exc)
            loop.call_soon(done, result)

        try:
            self._pool.submit(work)
        except RuntimeError:
            pass  # shut down: the manager is stopping

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
