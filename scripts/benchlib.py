"""Shared helpers of the benchmarks: the benchmark virtualenv, the three daemons, /proc probes.

Every scenario script (scripts/bench_*.py) runs in a virtualenv of its own (`.venv-bench/`)
that holds supervisor and circus, so that neither ever becomes a dependency of zsup. zsupd
runs from the same virtualenv (zsup's dependencies are installed there too, zsup itself is
imported from the source tree), so all three daemons start the same interpreter.

Each daemon is started with a temporary config, state dir and sockets (ipc:// or unix
sockets only, nothing on the network), and killed with everything it started at the end of
its run, even when the run fails: the scenario process makes itself a child subreaper, so
whatever a daemon leaves behind is re-parented to it and killed on the way out.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_VENV = os.environ.get("BENCH_VENV") or os.path.join(ROOT, ".venv-bench")
BENCH_PY = os.path.join(BENCH_VENV, "bin", "python")


def _zsup_dependencies() -> list[str]:
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


# Versions checked on Python 3.11 (circus 0.19.0 is the first release with 3.11/3.12 support;
# it needs tornado >= 5 and pyzmq >= 17, both fine with pyzmq 27). zsup's own dependencies
# go in too: zsupd runs from this virtualenv like the rivals, with zsup imported from the
# source tree (PYTHONPATH) and compiled to bytecode, as a wheel install has it. From its
# editable install in .venv, every start would also import setuptools' editable finder
# (and pathlib with it): ~15 ms that no installed program pays.
BENCH_PACKAGES = ["supervisor==4.3.0", "circus==0.19.0", "psutil", "pyzmq"] + _zsup_dependencies()
ZSUP_PY = BENCH_PY if os.path.exists(BENCH_PY) else sys.executable
STAMP = os.path.join(BENCH_VENV, ".bench-installed")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
KINDS = ("zsup", "circus", "supervisord")
SLEEP = shutil.which("sleep") or "/bin/sleep"
CAT = shutil.which("cat") or "/bin/cat"
PR_SET_CHILD_SUBREAPER = 36


def progress(*parts) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the benchmark virtualenv
def ensure_bench_venv() -> str:
    """Create (or reuse) .venv-bench with supervisor and circus; return its python."""
    wanted = "\n".join(BENCH_PACKAGES)
    try:
        with open(STAMP) as f:
            if f.read() == wanted and os.path.exists(BENCH_PY):
                return BENCH_PY
    except OSError:
        pass
    base = sys.executable
    venv_py = os.path.join(ROOT, ".venv", "bin", "python")
    if os.path.exists(venv_py):  # a real interpreter, not a venv of a venv's symlink chain
        base = venv_py
    if not os.path.exists(BENCH_PY):
        progress(f"creating the benchmark virtualenv {BENCH_VENV}")
        subprocess.run([base, "-m", "venv", BENCH_VENV], check=True)
    for pkg in BENCH_PACKAGES:
        progress(f"installing {pkg} into {os.path.basename(BENCH_VENV)} (from PyPI)")
        subprocess.run([BENCH_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", pkg],
                       check=True)
    out = subprocess.run([BENCH_PY, "-c", "import circus, supervisor.options, zmq, psutil; "
                          "print(circus.__version__)"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: circus/supervisor do not import in {BENCH_VENV}: {out.stderr.strip()}")
    progress(f"benchmark virtualenv ready (circus {out.stdout.strip()})")
    with open(STAMP, "w") as f:
        f.write(wanted)
    return BENCH_PY


def in_bench_venv() -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(BENCH_VENV)


def reexec_in_bench_venv() -> None:
    """A scenario script run alone with any python moves itself into .venv-bench."""
    if in_bench_venv():
        return
    py = ensure_bench_venv()
    os.execv(py, [py] + sys.argv)


# ------------------------------------------------------------------ cleanup of everything
_daemons: list = []


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(pid: int | None = None) -> list[int]:
    out, todo = [], [pid or os.getpid()]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def kill_descendants() -> None:
    """SIGKILL every process below this one (orphans come to us: we are a subreaper), reap."""
    for _ in range(5):
        pids = descendants()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                if not children(os.getpid()):
                    break
                time.sleep(0.01)


def _cleanup() -> None:
    for d in list(_daemons):
        try:
            d.stop()
        except Exception:
            pass
    kill_descendants()


def compile_zsup() -> None:
    """zsup's bytecode, as an install from a wheel has it: `pip install -e` (the bench's
    .venv) compiles nothing, and with PYTHONDONTWRITEBYTECODE set every zsupd start would
    compile zsup's modules again (~90 ms, more than the imports themselves). circus and
    supervisor, installed by pip into .venv-bench, have theirs."""
    if os.path.exists(ZSUP_PY):
        subprocess.run([ZSUP_PY, "-m", "compileall", "-q", os.path.join(ROOT, "zsup")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def setup_process() -> None:
    """Call first in a scenario's main: subreaper, generous fd limit, cleanup on any exit."""
    become_subreaper()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    compile_zsup()
    atexit.register(_cleanup)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


# ------------------------------------------------------------------ /proc probes
def children(pid: int) -> list[int]:
    """Direct children of a process (every thread's), zombies included until reaped."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0]
    except OSError:
        return b""


class ChildWatch:
    """Counts the children of one process that really run a program (exec done: argv[0] is
    it, not the forking python nor zsup's `setpriv` step)."""

    def __init__(self, parent: int, program: str = "sleep"):
        self.parent = parent
        self.program = program.encode()
        self.known: set[int] = set()  # pids seen running the program

    def running(self) -> set[int]:
        kids = set(children(self.parent))
        self.known &= kids
        for pid in kids - self.known:
            name = argv0(pid)
            if name == self.program or name.endswith(b"/" + self.program):
                self.known.add(pid)
        return set(self.known)

    def wait_count(self, n: int, timeout: float, interval: float = 0.0002, exact: bool = False) -> float:
        """Wait until at least (or exactly) n children run the program; the time it happened."""
        deadline = time.monotonic() + timeout
        while True:
            count = len(self.running())
            now = time.monotonic()
            if (count == n) if exact else (count >= n):
                return now
            if now > deadline:
                raise TimeoutError(f"{count} of {n} children running {self.program.decode()} "
                                   f"after {timeout}s")
            time.sleep(interval)

    def wait_gone(self, timeout: float, interval: float = 0.0002) -> float:
        """Wait until every child that ran the program has exited and been reaped. Other
        children of the daemon (zsupd's `zsup-guard` helper, say) are not counted."""
        others = set(children(self.parent)) - self.running()
        deadline = time.monotonic() + timeout
        while True:
            kids = set(children(self.parent)) - others
            now = time.monotonic()
            if not kids:
                return now
            if now > deadline:
                raise TimeoutError(f"{len(kids)} children left after {timeout}s")
            time.sleep(interval)


def wait_for(condition, timeout: float, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ jobs and daemons
class Job:
    """One job, said the same way to every daemon."""

    def __init__(self, name: str, argv: list[str], numprocesses: int = 1, autostart: bool = True,
                 restart: bool = True, log_file: str | None = None):
        self.name = name
        self.argv = argv
        self.numprocesses = numprocesses
        self.autostart = autostart
        self.restart = restart
        self.log_file = log_file  # where stdout goes (output scenario); None: the default


class Daemon:
    kind = "?"

    def __init__(self, jobs: list[Job], tuned: bool = False, workdir: str | None = None):
        self.jobs = jobs
        self.tuned = tuned
        self.dir = workdir or tempfile.mkdtemp(prefix=f"bench-{self.kind}-")
        self._own_dir = workdir is None
        self.proc: subprocess.Popen | None = None
        self.t_start = 0.0
        self._log = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def start(self) -> "Daemon":
        self.write_config()
        self._log = open(os.path.join(self.dir, "daemon.out"), "ab")
        _daemons.append(self)
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, env=self.env(), cwd=self.dir)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.output()}")
            try:
                return self.ping()
            except Exception:
                self.close_clients()  # a client that failed once may stay broken: start afresh
                return False

        wait_for(ready, timeout, 0.02, f"{self.kind} to answer")

    def output(self) -> str:
        try:
            with open(os.path.join(self.dir, "daemon.out"), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """Terminate gracefully, then kill the daemon and everything below it."""
        if self.proc is None:
            return
        below = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.close_clients()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close_clients()
        if self._log:
            self._log.close()
        if self in _daemons:
            _daemons.remove(self)
        self.proc = None
        if self._own_dir and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # what every daemon answers
    def write_config(self) -> None: ...
    def ping(self) -> bool: ...
    def start_job(self, name: str) -> None: ...
    def wait_idle(self, name: str) -> None: ...
    def stop_job(self, name: str) -> None: ...
    def status(self): ...
    def close_clients(self) -> None: ...
    def status_count(self, result) -> int: ...
    def info(self, name: str): ...
    def info_count(self, result) -> int: ...


class ZsupDaemon(Daemon):
    kind = "zsup"

    def __init__(self, *a, settings: dict | None = None, **kw):
        super().__init__(*a, **kw)
        self.settings = settings or {}
        self.state = os.path.join(self.dir, "state")
        self.bus = f"ipc://{self.state}/zsupd.sock"
        self.pub = f"ipc://{self.state}/zsupd-pub.sock"
        self._client = None

    def write_config(self) -> None:
        lines = ["[zsup]", f"state_dir = {self.state}"]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        for job in self.jobs:
            lines += ["", f"[process:{job.name}]", f"cmd = {job.argv[0]}"]
            if job.argv[1:]:
                lines.append("args = " + " ".join(job.argv[1:]))
            lines.append(f"numprocesses = {job.numprocesses if job.autostart else 0}")
        self.config = os.path.join(self.dir, "zsup.ini")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def env(self) -> dict:
        return dict(os.environ, PYTHONPATH=ROOT, ZSUP_STATE_DIR=self.state)

    def command(self) -> list[str]:
        return [ZSUP_PY, "-m", "zsup.cli.zsupd", "-c", self.config, "--state-dir", self.state]

    @property
    def client(self):
        if self._client is None:
            sys.path.insert(0, ROOT) if ROOT not in sys.path else None
            from zsup.bus.client import Client

            self._client = Client(self.bus, timeout=30)
        return self._client

    def call(self, cmd, **args):
        return self.client.call(cmd, **args)

    def ping(self) -> bool:
        return self.call("ping") == "pong"

    def start_job(self, name):
        self.call("start_job", name=name)

    def stop_job(self, name):
        self.call("stop_job", name=name)

    def wait_idle(self, name):
        # like circus's "stopped": every process of the stop has been reaped and its exit
        # handled (published, logged), so the next command is timed on its own
        wait_for(lambda: not self.call("info", name=name)["processes"], 30, 0.01, "zsupd to finish the stop")

    def status(self):
        return self.call("status")

    def status_count(self, result) -> int:
        return sum(len(j["pids"]) for j in result)

    def info(self, name):
        return self.call("info", name=name)

    def info_count(self, result) -> int:
        return sum(1 for p in result["processes"] if p["state"] == "running")

    def close_clients(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class CircusDaemon(Daemon):
    kind = "circus"
    CHECK_DELAY_TUNED = 0.01  # seconds; the default is 1.0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.endpoint = f"ipc://{self.dir}/circus.sock"
        self._client = None

    def write_config(self) -> None:
        lines = ["[circus]", f"endpoint = {self.endpoint}", f"pubsub_endpoint = ipc://{self.dir}/circus-pub.sock",
                 "statsd = False",
                 # an empty value turns off circus's UDP multicast discovery socket (0.0.0.0)
                 "multicast_endpoint = "]
        if self.tuned:
            lines.append(f"check_delay = {self.CHECK_DELAY_TUNED}")
        for job in self.jobs:
            lines += ["", f"[watcher:{job.name}]", f"cmd = {job.argv[0]}"]
            if job.argv[1:]:
                lines.append("args = " + " ".join(job.argv[1:]))
            lines += [f"numprocesses = {job.numprocesses}", f"autostart = {job.autostart}",
                      f"respawn = {job.restart}"]
            if job.log_file:
                lines += ["stdout_stream.class = FileStream", f"stdout_stream.filename = {job.log_file}"]
        self.config = os.path.join(self.dir, "circus.ini")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [os.path.join(BENCH_VENV, "bin", "circusd"), self.config]

    @property
    def client(self):
        if self._client is None:
            from circus.client import CircusClient

            self._client = CircusClient(endpoint=self.endpoint, timeout=30)
        return self._client

    def call(self, command, **props):
        # circus refuses a command while the arbiter still runs another ("arbiter is already
        # running arbiter_start_watchers command": its start goes on after the children run),
        # so such a refusal is retried, not recorded as the scenario's error
        deadline = time.monotonic() + 30
        while True:
            reply = self.client.call({"command": command, "properties": props})
            if reply.get("status") == "ok":
                return reply
            if "already running" not in str(reply.get("reason")) or time.monotonic() > deadline:
                raise RuntimeError(f"circus {command}: {reply}")
            time.sleep(0.01)

    def ping(self) -> bool:
        return self.call("list") is not None

    def start_job(self, name):
        self.call("start", name=name)

    def stop_job(self, name):
        self.call("stop", name=name, waiting=False)

    def wait_idle(self, name):
        # circus refuses any command while the stop still runs ("arbiter is already running")
        wait_for(lambda: self.client.call({"command": "status", "properties": {"name": name}})
                 .get("status") == "stopped", 30, 0.01,
                 "circus to finish the stop")

    def status(self):
        return self.call("list", name=self.jobs[0].name)

    def status_count(self, result) -> int:
        return len(result.get("pids", []))

    def info(self, name):
        # circus's fullest answer about a watcher's processes: pid, cmdline, cpu, memory, ...
        return self.call("stats", name=name)

    def info_count(self, result) -> int:
        return len(result.get("info", {}))

    def close_clients(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None


class SupervisorDaemon(Daemon):
    kind = "supervisord"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sock = os.path.join(self.dir, "supervisor.sock")
        self._proxy = None

    def write_config(self) -> None:
        os.makedirs(os.path.join(self.dir, "childlogs"), exist_ok=True)
        lines = ["[unix_http_server]", f"file = {self.sock}", "chmod = 0700", "",
                 "[supervisord]", f"logfile = {self.dir}/supervisord.log", f"pidfile = {self.dir}/supervisord.pid",
                 f"childlogdir = {self.dir}/childlogs", "nodaemon = true", "loglevel = warn", "",
                 "[rpcinterface:supervisor]",
                 "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
                 "[supervisorctl]", f"serverurl = unix://{self.sock}"]
        for job in self.jobs:
            lines += ["", f"[program:{job.name}]", "command = " + " ".join(job.argv),
                      f"numprocs = {job.numprocesses}", f"autostart = {str(job.autostart).lower()}",
                      f"autorestart = {'unexpected' if job.restart else 'false'}"]
            if job.numprocesses > 1:
                lines.append("process_name = %(program_name)s_%(process_num)03d")
            if self.tuned or not job.restart:
                lines.append("startsecs = 0")  # a one-shot job must not count as a failed start
            if job.log_file:
                lines += [f"stdout_logfile = {job.log_file}", "stdout_logfile_maxbytes = 0"]
        self.config = os.path.join(self.dir, "supervisord.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [os.path.join(BENCH_VENV, "bin", "supervisord"), "-c", self.config]

    @property
    def proxy(self):
        if self._proxy is None:
            import xmlrpc.client

            from supervisor.xmlrpc import SupervisorTransport

            self._proxy = xmlrpc.client.ServerProxy(
                "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}"))
        return self._proxy

    def ping(self) -> bool:
        return self.proxy.supervisor.getState()["statecode"] == 1

    def start_job(self, name):
        self.proxy.supervisor.startProcessGroup(name, False)

    def stop_job(self, name):
        self.proxy.supervisor.stopProcessGroup(name, False)

    def status(self):
        return self.proxy.supervisor.getAllProcessInfo()

    def status_count(self, result) -> int:
        return sum(1 for p in result if p["statename"] == "RUNNING")

    def info(self, name):
        # supervisord's fullest answer about a group's processes (what status also asks)
        return self.proxy.supervisor.getAllProcessInfo()

    def info_count(self, result) -> int:
        return self.status_count(result)

    def close_clients(self) -> None:
        if self._proxy is not None:
            try:
                self._proxy("close")()
            except Exception:
                pass
            self._proxy = None


DAEMONS = {"zsup": ZsupDaemon, "circus": CircusDaemon, "supervisord": SupervisorDaemon}


def make_daemon(kind: str, jobs: list[Job], **kw) -> Daemon:
    return DAEMONS[kind](jobs, **kw)


# ------------------------------------------------------------------ numbers and output
def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values):
    return statistics.median(values) if values else float("nan")


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / (1024 * 1024)


def scenario_main(name: str, run_one, limit=None, variants=None, default_rounds: int = 3) -> None:
    """The common main of a scenario script: rounds of A B C (each daemon in turn), the
    machine limit once per round; prints one JSON document on stdout.

    run_one(kind, tuned) -> dict of numbers; limit() -> dict of numbers.
    `variants`: (kind, tuned) pairs; by default each daemon once with its defaults.
    """
    import argparse

    reexec_in_bench_venv()
    setup_process()
    p = argparse.ArgumentParser(description=f"benchmark scenario: {name}")
    p.add_argument("--rounds", type=int, default=1 if QUICK else default_rounds)
    p.add_argument("--only", action="append", help="run only these daemons (zsup, circus, supervisord)")
    args = p.parse_args()
    variants = variants or [(k, False) for k in KINDS]
    if args.only:
        variants = [v for v in variants if v[0] in args.only]
    runs: dict[str, list] = {}
    errors: dict[str, str] = {}
    limits: list = []
    for r in range(args.rounds):
        for kind, tuned in variants:
            key = kind + ("+tuned" if tuned else "")
            if key in errors:
                continue
            progress(f"{name}: round {r + 1}/{args.rounds}: {key}")
            try:
                runs.setdefault(key, []).append(run_one(kind, tuned))
            except Exception as exc:  # one daemon failing must not lose the others' numbers
                errors[key] = f"{type(exc).__name__}: {exc}"
                progress(f"{name}: {key} failed: {errors[key]}")
            finally:
                for d in list(_daemons):
                    d.stop()
                kill_descendants()
        if limit is not None:
            try:
                limits.append(limit())
            except Exception as exc:
                errors["limit"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"scenario": name, "quick": QUICK, "rounds": args.rounds, "runs": runs,
                      "limit": limits, "errors": errors}, indent=1))
