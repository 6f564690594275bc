"""One OS process started from a job: how it is spawned, and what zsup knows of it.

Why it spawns the way it does:
- Each child gets its own process group, so a stop reaches a shell's children too.
- The death signal (PR_SET_PDEATHSIG) is set between vfork and exec by a small C function
  (zsup/core/spawner.py, zsup/core/_spawn.c), never by a `preexec_fn`: CPython documents
  preexec_fn as unsafe in a threaded process (a fork can deadlock on a lock another thread
  held), and zsupd is threaded. Where the C part is not built, the child execs through
  util-linux's `setpriv --pdeathsig KILL` first: the same guarantee for one more exec. The
  death signal follows the *thread* that forked, so only long-lived threads spawn (the
  manager spawns from its supervisor loop).
- Pipes are made here with O_CLOEXEC and handed to Popen as plain fds, so the parent keeps
  raw non-blocking fds for the IO loop, not Python file objects.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

from zsup.core import spawner
from zsup.core.envfile import substitute
from zsup.core.jobspec import JobSpec
from zsup.core.limits import has_limits, spawn_args
from zsup.core.output import OutputStream
from zsup.core.spawner import INHERIT, SAME_AS_STDOUT, STDIN_NULL
from zsup.core.states import ProcessState, check_process
from zsup.errors import ZsupError

SETPRIV = shutil.which("setpriv")
# `$(socket.NAME)` in cmd/args: the fd number the job's socket NAME is passed at
SOCKET_FD_RE = re.compile(r"\$\(socket\.([A-Za-z0-9_-]+)\)")
# The C helper's environment is fixed before the fork; the shell sets the pid, then becomes the program.
LISTEN_PID_SH = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'


def encode_json(obj) -> bytes:
    """The bus's JSON form (zsup.bus.protocol.encode_json, which core may not import): the
    cached listings (info_json) are replied as they are."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class SpawnError(ZsupError):
    code = "conflict"


# zsupd's own environment, decoded once (os.environ decodes every item on each read): kept
# with the raw bytes it came from, and read again only when those changed.
_environ: tuple[dict, dict] = ({}, {})
# shutil.which's answers for a second (it stats every PATH entry): a job of hundreds looks
# its program up once. A program gone since makes the exec fail (a clear SpawnError anyway).
# Supervisor thread only.
_which: dict[tuple, tuple[float, str | None]] = {}
WHICH_TTL = 1.0


def _os_environ() -> dict:
    global _environ
    raw = os.environ._data  # noqa: SLF001 - the bytes behind os.environ, compared in C
    if raw != _environ[0]:
        _environ = (dict(raw), dict(os.environ))
    return _environ[1]


def build_env(spec: JobSpec, extra: dict | None = None) -> dict:
    env = dict(_os_environ()) if spec.os_env else {}
    env.update(spec.env)
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def build_argv(spec: JobSpec, env: dict) -> list[str]:
    """The command line, with $VAR substituted from the process's environment.

    A shell command (`shell = true`) goes to the shell as written: the shell expands `$VAR`
    from the same environment itself, and `$$`, `$!` or `$(...)` keep their shell meaning
    (substituting first would turn `$$` into `$`, and would paste values into the line as
    shell code). Its `args` are substituted, then quoted."""
    args = [substitute(a, env) for a in spec.args]
    if spec.shell:
        line = " ".join([spec.cmd] + [shlex.quote(a) for a in args])
        return ["/bin/sh", "-c", line]
    cmd = substitute(spec.cmd, env)
    try:
        argv = list(_split(cmd)) + args
    except ValueError as exc:
        raise SpawnError(f"cmd: {exc}") from None
    if not argv:
        raise SpawnError("cmd: empty command")
    return argv


@functools.lru_cache(maxsize=256)
def _split(cmd: str) -> tuple[str, ...]:
    return tuple(shlex.split(cmd))


def find_executable(program: str, env: dict, cwd: str | None) -> str:
    """Fail before forking when the program can't be run: a clear error, not exit 127."""
    if "/" in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return program
        raise SpawnError(f"cannot execute {program!r}: not an executable file")
    key = (program, env.get("PATH", os.defpath), cwd)
    now = time.monotonic()
    hit = _which.get(key)
    if hit is not None and now - hit[0] < WHICH_TTL:
        found = hit[1]
    else:
        if len(_which) > 256:
            _which.clear()
        found = shutil.which(program, path=key[1])
        if found:  # a miss is looked up again next time (the program may be installed since)
            _which[key] = (now, found)
    if not found:
        raise SpawnError(f"cannot execute {program!r}: not found in PATH")
    return found


_LAST_SEQ = operator.attrgetter("last_seq")
_STATE_JSON = {state: encode_json(state.value) for state in ProcessState}


class Process:
    """A spawned child. Its pipes are read by the IO loop; its pidfd is watched by the
    supervisor loop. All fields are changed only in the supervisor loop's thread; `state`
    only through `set_state` (zsup/core/states.py: spawning -> running -> stopping -> exited)."""

    def __init__(self, pid: int, spec: JobSpec, committed: bool = False, graceful_timeout: float | None = None):
        self.pid = pid
        self.spec = spec
        self.committed = committed
        self.graceful_timeout = spec.graceful_timeout if graceful_timeout is None else graceful_timeout
        self.os_pid = 0
        self.popen: subprocess.Popen | None = None
        self.pidfd = -1
        self.started = 0.0
        self.started_mono = 0.0
        self.ended = 0.0
        self.state = ProcessState.SPAWNING
        self.exit_code: int | None = None
        self.term_signal: int | None = None
        self.stop_reason: str | None = None
        self.stop_timer = None
        self.streams: dict[str, OutputStream] = {}
        self.out_fds: list[tuple[int, OutputStream]] = []
        self.stdin_fd = -1
        self.adopted = False  # a detached process started by a previous zsupd, found again
        self.instance: int | None = None  # slot among the job's kept processes (ZSUP_INSTANCE)
        # info_json's cache: every field but the state, the output seqs and the uptime; made
        # again when set_state (the one door for the fields it holds) resets _json_life, or
        # when the life changed
        self._json_life = -1
        self._json = b""
        self._json_tail = b""

    @property
    def job(self) -> str:
        return self.spec.fullname

    def set_state(self, new: ProcessState) -> None:
        """Move to `new`; IllegalTransition if the state machine does not allow it."""
        check_process(self.state, new, self.pid)
        self.state = new
        if new is not ProcessState.STOPPING:
            # the other moves come with fields of the fragment (os_pid, started, exit_code...);
            # a stop changes the state alone, which info_json formats per call: a stop of
            # hundreds answers its info without encoding each process again
            self._json_life = -1

    def spawn(self, extra_env: dict | None = None, socket_fds: dict | None = None) -> None:
        """Start the process. `socket_fds`: zsupd's listening sockets by name (name -> fd),
        of which the job's `sockets` are passed on from fd 3."""
        spec = self.spec
        env = build_env(spec, extra_env)
        argv = build_argv(spec, env)
        passed = self._sockets(socket_fds or {}, env)
        if passed:
            argv = [SOCKET_FD_RE.sub(lambda m: str(3 + spec.sockets.index(m.group(1))), a) for a in argv]
        if spec.cwd and not os.path.isdir(spec.cwd):  # checked at load; it may have gone since
            raise SpawnError(f"cwd {spec.cwd!r}: no such directory")
        exe = find_executable(argv[0], env, spec.cwd)
        child_fds: list[int] = []
        parent_fds: list[int] = []
        try:
            stdin = STDIN_NULL
            if spec.redirect_input:
                r, w = os.pipe2(os.O_CLOEXEC)
                stdin, self.stdin_fd = r, w
                child_fds.append(r)
                parent_fds.append(w)
            stdout = stderr = INHERIT
            labels = spec.redirect_output
            if labels:
                stdout = self._output_pipe(labels[0], child_fds, parent_fds)
                if len(labels) == 2 and labels[1] == labels[0]:
                    stderr = SAME_AS_STDOUT
                elif len(labels) == 2:
                    stderr = self._output_pipe(labels[1], child_fds, parent_fds)
            if passed:  # LISTEN_PID is the child's own pid: only the child knows it
                argv, exe = ["/bin/sh", "-c", LISTEN_PID_SH, "sh", exe] + argv[1:], "/bin/sh"
            self.os_pid = self._start(exe, argv, env, (stdin, stdout, stderr), passed)
        except OSError as exc:
            for fd in parent_fds:
                os.close(fd)
            self.out_fds, self.stdin_fd = [], -1
            raise SpawnError(f"cannot execute {argv[-1] if spec.shell else argv[0]!r}: {exc.strerror or exc}") from None
        finally:
            for fd in child_fds:
                os.close(fd)
        self.pidfd = os.pidfd_open(self.os_pid)
        self.started = time.time()
        self.started_mono = time.monotonic()
        for fd, _ in self.out_fds:
            os.set_blocking(fd, False)
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)
        self.set_state(ProcessState.RUNNING)

    def _sockets(self, socket_fds: dict, env: dict) -> list[tuple[int, int]]:
        """The (fd, target) pairs of the job's sockets, and systemd's variables in `env`."""
        names = self.spec.sockets
        if not names:  # zsupd's own (if systemd passed it sockets) would mislead the program
            for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                if key not in self.spec.env:
                    env.pop(key, None)
            return []
        missing = [n for n in names if n not in socket_fds]
        if missing:
            raise SpawnError(f"sockets: zsupd has no socket {missing[0]!r} (a [socket:NAME] section)")
        env.update(LISTEN_FDS=str(len(names)), LISTEN_FDNAMES=":".join(names))
        env.pop("LISTEN_PID", None)
        return [(socket_fds[name], 3 + i) for i, name in enumerate(names)]

    def _start(self, exe: str, argv: list[str], env: dict, stdio: tuple[int, int, int],
               fds: list[tuple[int, int]] = ()) -> int:
        """Fork and exec the program; its os pid. Through zsup/core/spawner.py when its C part
        is built, else through Popen and setpriv. OSError if it cannot start."""
        spec = self.spec
        if spawner.available():
            return spawner.spawn(exe, argv, env, spec.cwd, stdio, setsid=bool(spec.detach), setpgid=not spec.detach,
                                 pdeathsig=0 if spec.detach else signal.SIGKILL, uid=spec.uid, gid=spec.gid,
                                 fds=fds, **spawn_args(spec))
        if has_limits(spec) or fds:
            # setpriv cannot set them and a preexec_fn is unsafe here: refuse rather than
            # run the program without the limits it asked for
            raise SpawnError("rlimit_*, nice, umask, oom_score_adj and sockets need zsup's C spawn helper "
                             "(zsup/core/_spawn.c), which is not built here: reinstall zsup with a C compiler")
        if not spec.detach and SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "KILL", "--"] + argv
        popen_stdio = [subprocess.DEVNULL if fd == STDIN_NULL else None if fd == INHERIT
                       else subprocess.STDOUT if fd == SAME_AS_STDOUT else fd for fd in stdio]
        self.popen = subprocess.Popen(
            argv,
            stdin=popen_stdio[0],
            stdout=popen_stdio[1],
            stderr=popen_stdio[2],
            cwd=spec.cwd,
            env=env,
            user=spec.uid,
            group=spec.gid,
            process_group=None if spec.detach else 0,
            start_new_session=spec.detach,
            close_fds=True,
        )
        return self.popen.pid

    def adopt(self, os_pid: int, started: float) -> None:
        """Take over a detached process a previous zsupd spawned (ProcessLookupError if it is
        gone). Not our child: waited for through its pidfd only."""
        self.pidfd = os.pidfd_open(os_pid)
        self.os_pid, self.adopted = os_pid, True
        self.started = started
        self.started_mono = time.monotonic() - max(0.0, time.time() - started)
        self.set_state(ProcessState.RUNNING)

    def _output_pipe(self, label: str, child_fds: list[int], parent_fds: list[int]) -> int:
        """A pipe for one labelled stream: its read end goes to the IO loop, the write end
        (returned) to the child."""
        r, w = os.pipe2(os.O_CLOEXEC)
        stream = OutputStream(label, self.spec.ring_size, self.spec.max_line, self.spec.ring_max_bytes)
        self.streams[label] = stream
        self.out_fds.append((r, stream))
        child_fds.append(w)
        parent_fds.append(r)
        return w

    def signal_group(self, sig: int) -> bool:
        """Signal the child's whole process group (its own pid is the group id)."""
        try:
            os.killpg(self.os_pid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False

    def signal(self, sig: int) -> bool:
        if self.state == ProcessState.EXITED:
            return False
        try:
            os.kill(self.os_pid, sig)
            return True
        except ProcessLookupError:
            return False

    def reaped(self, status: int | None) -> None:
        """Record the wait status (None: unknown, for an adopted process); tell Popen so it
        never waits for this child itself."""
        if status is None:
            pass
        elif os.WIFSIGNALED(status):
            self.term_signal = os.WTERMSIG(status)
            self.exit_code = -self.term_signal
        else:
            self.exit_code = os.waitstatus_to_exitcode(status)
        self.set_state(ProcessState.EXITED)
        self.ended = time.time()
        if self.popen is not None:
            self.popen.returncode = self.exit_code
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def uptime(self) -> float:
        end = self.ended if self.state == ProcessState.EXITED else time.time()
        return max(0.0, end - self.started)

    def info_json(self, now: float) -> bytes:
        """`info()`, with its `life.info()` merged in when it has one (zsup/core/lifecycle.py's
        ProcLife), as JSON: from a fragment made again only when the state changed (set_state)
        or the life did (`life.version`); the state, the output seqs and the uptime are the
        only fields formatted per call, so a listing of hundreds costs a format each, not an
        encode."""
        self.warm_json()
        return self._json + self._json_tail % (_STATE_JSON[self.state], *map(_LAST_SEQ, self.streams.values()),
                                               max(0.0, (self.ended or now) - self.started))

    def warm_json(self) -> None:
        """Make info_json's cached fragment again if the state or the life changed since."""
        life = getattr(self, "life", None)  # set by the lifecycle before the spawn
        if (0 if life is None else life.version) != self._json_life:
            self._cache_json(life)

    def _cache_json(self, life) -> None:
        info = self.info()
        if life is not None:
            info.update(life.info())
        del info["state"], info["last_seq"], info["uptime"]
        seqs = ",".join(f'"{label}":%d' for label in self.streams)  # labels are names: no quote, no %
        self._json = encode_json(info)[:-1]
        self._json_tail = (',"state":%s,"last_seq":{' + seqs + '},"uptime":%.3f}').encode()
        self._json_life = 0 if life is None else life.version

    def info(self) -> dict:
        return {
            "pid": self.pid,
            "os_pid": self.os_pid,
            "name": self.spec.name,
            "session": self.spec.session,
            "job": self.job,
            "cmd": self.spec.cmd,
            "args": self.spec.args,
            "state": self.state.value,
            "committed": self.committed,
            "detach": self.spec.detach,
            "adopted": self.adopted,
            "started": self.started,
            "uptime": round(self.uptime(), 3),
            "exit_code": self.exit_code,
            "term_signal": self.term_signal,
            "labels": list(self.streams),
            "redirect_input": self.spec.redirect_input,
            "last_seq": {label: s.last_seq for label, s in self.streams.items()},
        }
