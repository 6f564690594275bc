"""Starting a child with its parent-death signal and no extra exec.

A child of zsupd must die when zsupd is SIGKILLed, so it needs PR_SET_PDEATHSIG, set between
fork and exec. zsupd is threaded, so that cannot be a Python `preexec_fn` (CPython documents
it as unsafe there: the forked child may block forever on a lock another thread held).
The first answer was to exec util-linux's `setpriv --pdeathsig KILL` before the program:
safe, but one more exec and dynamic load per spawn.

This module's answer is a small C function (zsup/core/_spawn.c, built at install) that does
what CPython's own subprocess does, vfork then only system calls then exec, plus the prctl,
followed by a check that the parent is still zsupd: if zsupd died between the vfork and
the prctl, the signal would never come, so the child exits instead (no window). Setting
limits (setrlimit, umask, nice) the same way is a few more system calls in the same place.

Where the extension could not be built (no C compiler at install), `available()` is False
and zsup/core/process.py spawns through Popen and setpriv as before.

Thread rule: `spawn` may be called from any thread, but the death signal follows the thread
that called it: call it from one that lives as long as the children (zsupd's supervisor loop).
"""

from __future__ import annotations

import errno
import os

try:
    from zsup.core import _spawn
except ImportError:  # not built: spawn through setpriv
    _spawn = None

STDIN_NULL, INHERIT, SAME_AS_STDOUT = -1, -2, -3


# KEY=VALUE bytes by (key, value), checked once: the children of a job share nearly all of
# their environment, and encoding it item by item was a good part of a spawn's Python time.
_envp: dict[tuple[str, str], bytes] = {}


def _encode_env(env: dict) -> list[bytes]:
    envp = []
    cache = _envp
    for item in env.items():
        entry = cache.get(item)
        if entry is None:
            key, value = item
            if "=" in key or not key:
                raise OSError(errno.EINVAL, f"illegal environment variable name {key!r}")
            entry = os.fsencode(f"{key}={value}")
            if b"\0" in entry:
                raise OSError(errno.EINVAL, "embedded null byte in the command or environment")
            if len(cache) > 4096:
                cache.clear()
            cache[item] = entry
        envp.append(entry)
    return envp


def available() -> bool:
    return _spawn is not None


def spawn(exe: str, argv: list[str], env: dict, cwd: str | None, stdio: tuple[int, int, int], *,
          setsid: bool = False, setpgid: bool = True, pdeathsig: int = 0, uid: int | None = None,
          gid: int | None = None, umask: int | None = None, nice: int | None = None,
          limits: list[tuple[int, int, int]] = (), oom_score_adj: int | None = None,
          fds: list[tuple[int, int]] = ()) -> int:
    """Start `exe` and return its pid once it has exec'd (a child of this process).

    `stdio`: an fd for each of 0, 1, 2 (the caller keeps and closes its own copy), or
    STDIN_NULL (/dev/null), INHERIT, SAME_AS_STDOUT. Every other fd is closed in the child.
    `setsid` (a new session) wins over `setpgid` (a new process group). For the limits
    (issue 16), applied in the child before the exec, after the fds and before the user
    change: `umask`; `nice` (the niceness to set, not an increment); `limits`, (resource,
    soft, hard) with `resource.RLIMIT_*` numbers and -1 for unlimited; `oom_score_adj`;
    `fds`, (fd, target) pairs passed on at target numbers from 3 (listening sockets). None
    or empty keeps what zsupd has. OSError if a step before the exec failed (the child has
    then exited and been reaped; `strerror` names the step unless it was the exec)."""
    envp = _encode_env(env)
    args = [os.fsencode(a) for a in argv]
    if any(b"\0" in a for a in args):
        raise OSError(errno.EINVAL, "embedded null byte in the command or environment")
    return _spawn.spawn(os.fsencode(exe), args, envp, None if cwd is None else os.fsencode(cwd), stdio,
                        setsid, setpgid, pdeathsig, -1 if uid is None else uid, -1 if gid is None else gid,
                        -1 if umask is None else umask, nice, list(limits), oom_score_adj, list(fds))
