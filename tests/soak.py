"""The chaos soak: a real zsupd and zsup-http under a seeded random schedule of trouble.

`run(Params)` starts zsupd (with a steady counter job, workers that fork grandchildren and an
echo job) and a standalone zsup-http on loopback, then repeats: a few random actions (kills of
children and grandchildren, scales, reloads by SIGHUP with a changed file, stop/start, stdin
writes, HTTP stream and websocket clients coming and going, some reading slowly, SIGTERM and
SIGKILL of zsupd followed by a restart), then a quiet spell, then checks. It returns a Report:
one list of problems per check, so a test can assert each check on its own.

Checks after each quiet spell: wanted counts; every descendant of zsupd is a listed process,
one of their descendants, or the orphan guard (`unlisted`); memory and threads of zsupd and
zsup-http within bounds. At the end: nothing of the soak's uid with its marker variable is
left (`leftovers`), the counter's lines are unbroken per process in its log file and on the
bus (`lines`), and no log holds a traceback.

Parameters come from Params, whose defaults read ZSUP_SOAK_SEED, ZSUP_SOAK_SECONDS and
ZSUP_SOAK_ACTIONS (actions per spell). Thread rule: the driver runs in one thread; clients and
the bus reader run in daemon threads of their own and only append to lists.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
MARKER = "ZSUP_SOAK_MARKER"
COUNTER = ("import os, time\nn = 0\nwhile True:\n    n += 1\n"
           "    print(os.getpid(), n, flush=True)\n    time.sleep(0.01)\n")
ECHO = os.path.join(ROOT, "etc", "echo.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.05):
    """condition()'s first truthy value within the deadline, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def _env(extra: dict | None = None) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, **(extra or {}))


class Gateway:
    """A real zsup-http process on a loopback port, talking to the zsupd of `state_dir`."""

    def __init__(self, state_dir: str, log_path: str, env: dict | None = None):
        self.state_dir, self.log_path, self.env = state_dir, log_path, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "Gateway":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.http_gateway", "--state-dir", self.state_dir,
                                          "--bind", f"127.0.0.1:{self.port}"], stdout=log, stderr=log,
                                         env=_env(self.env))
        if not wait_until(self.answers, timeout):
            self.stop()
            raise RuntimeError(f"zsup-http did not answer: {self.log()[-2000:]}")
        return self

    def answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/version")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Params:
    seed: int = field(default_factory=lambda: int(os.environ.get("ZSUP_SOAK_SEED", "12")))
    seconds: float = field(default_factory=lambda: float(os.environ.get("ZSUP_SOAK_SECONDS", "300")))
    actions: int = field(default_factory=lambda: int(os.environ.get("ZSUP_SOAK_ACTIONS", "4")))
    settle: float = 15.0            # how long a quiet spell may take to reach the wanted state
    max_rss_mb: float = 250.0       # each of zsupd and zsup-http
    max_thread_growth: int = 32     # above each one's count at start (zsup-http starts its pool)
    workdir: str | None = None      # default: a fresh temporary folder


@dataclass
class Report:
    spells: int = 0
    actions: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    unlisted: list = field(default_factory=list)
    leftovers: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    resources: list = field(default_factory=list)
    tracebacks: list = field(default_factory=list)
    peak: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)   # counter lines checked, in the logs and on the bus

    def summary(self) -> str:
        parts = [f"{self.spells} spells, {len(self.actions)} actions"]
        for name in ("counts", "unlisted", "leftovers", "lines", "resources", "tracebacks"):
            problems = getattr(self, name)
            parts.append(f"{name}: {len(problems)}" + (f" (first: {problems[0][:300]!r})" if problems else ""))
        return "; ".join(parts) + f"; peak {self.peak}; counter lines checked {self.checked}"


class Soak:
    def __init__(self, params: Params):
        self.p = params
        self.rng = random.Random(params.seed)
        self.arng = random.Random(params.seed)
        self.deck: list = []
        self.dir = params.workdir or tempfile.mkdtemp(prefix="zsup-soak-")
        self.state_dir = os.path.join(self.dir, "state")
        self.config_path = os.path.join(self.dir, "zsup.ini")
        self.log_path = os.path.join(self.dir, "zsupd.log")
        self.marker = uuid.uuid4().hex
        self.env = {MARKER: self.marker}
        self.report = Report()
        self.zsupd: subprocess.Popen | None = None
        self.gateway: Gateway | None = None
        self.workers = 2          # [process:worker] numprocesses in the file
        self.wanted = {"default.counter": 1, "default.worker": 2, "default.echo": 1}
        self.bus_lines: list[tuple[dict, bytes]] = []   # the counter's output frames (JSON, data)
        self.stop_clients = threading.Event()
        self.threads: list[threading.Thread] = []
        self.base: dict[str, int] = {}   # threads of zsupd and zsup-http when first seen

    # -- zsupd ----------------------------------------------------------------------------

    def write_config(self) -> None:
        with open(self.config_path, "w") as f:
            f.write(f"[process:counter]\ncmd = {PYTHON} -u {os.path.join(self.dir, 'counter.py')}\n"
                    f"graceful_timeout = 2\n"
                    f"[process:worker]\ncmd = sh -c 'sleep 300 & sleep 300 & wait'\n"
                    f"numprocesses = {self.workers}\ngraceful_timeout = 1\n"
                    f"[process:echo]\ncmd = {PYTHON} {ECHO}\nredirect_input = true\ngraceful_timeout = 2\n")

    def start_zsupd(self) -> None:
        with open(self.log_path, "ab") as log:
            self.zsupd = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupd", "-c", self.config_path, "--state-dir",
                                           self.state_dir], stdout=log, stderr=log, env=_env(self.env))
        if not wait_until(lambda: self.call("ping") == "pong", 20):
            raise RuntimeError(f"zsupd did not start: {self.read(self.log_path)[-2000:]}")

    def call(self, cmd: str, **args):
        """A bus call; None if zsupd does not answer or refuses (the soak goes on)."""
        from zsup.bus.client import Client
        from zsup.errors import ZsupError

        try:
            with Client(f"ipc://{self.state_dir}/zsupd.sock", timeout=5) as c:
                return c.call(cmd, **args)
        except ZsupError:
            return None

    @staticmethod
    def read(path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def os_pids(self, job: str) -> list[int]:
        for row in self.call("status") or []:
            if row["job"] == job:
                return row.get("os_pids", [])
        return []

    # -- actions --------------------------------------------------------------------------

    def act(self) -> None:
        # a shuffled deck rather than independent draws: every kind of trouble comes once per
        # deck, however few actions a short or slow run gets through
        if not self.deck:
            self.deck = [self.kill_child, self.kill_child, self.kill_grandchild, self.scale, self.reload,
                         self.stop_start, self.stdin, self.stream_client, self.stream_client, self.ws_client,
                         self.ws_client, self.restart_zsupd]
            self.rng.shuffle(self.deck)
        action = self.deck.pop()
        # each action draws from a generator of its own, seeded by the schedule: what one
        # action draws (depending on what it found) never shifts the rest of the schedule
        self.arng = random.Random(self.rng.getrandbits(64))
        self.report.actions.append(action.__name__)
        action()

    def kill_child(self) -> None:
        pids = self.os_pids(self.arng.choice(["default.worker", "default.echo"]))
        if pids:
            self._kill(self.arng.choice(pids), self.arng.choice([signal.SIGKILL, signal.SIGTERM]))

    def kill_grandchild(self) -> None:
        kids = []
        for pid in self.os_pids("default.worker"):
            try:
                kids += psutil.Process(pid).children()
            except psutil.NoSuchProcess:
                pass
        if kids:
            self._kill(self.arng.choice(kids).pid, signal.SIGKILL)

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def scale(self) -> None:
        n = self.arng.randint(0, 4)
        if self.call("scale", name="worker", n=f"={n}") is not None:
            self.wanted["default.worker"] = n

    def reload(self) -> None:
        # a changed [process:worker] section resets the job to the file (docs: run-time changes)
        self.workers = self.arng.choice([n for n in range(1, 4) if n != self.workers])
        self.write_config()
        self.wanted["default.worker"] = self.workers
        self.zsupd.send_signal(signal.SIGHUP)
        wait_until(lambda: (self.call("info", name="worker") or {}).get("numprocesses") == self.workers, 10)

    def stop_start(self) -> None:
        job = self.arng.choice(["worker", "echo"])
        self.call("stop_job", name=job)
        wait_until(lambda: not self.os_pids(f"default.{job}"), 10)
        self.call("start_job", name=job)

    def stdin(self) -> None:
        for pid in self.call("pids", name="echo") or []:
            self.call("send", pid=pid, data=f"soak {self.arng.random()}\n")

    def stream_client(self) -> None:
        """An HTTP output stream of the counter (or the event feed), read fast or slowly."""
        pid = (self.call("pids", name="counter") or [None])[0]
        path = f"/streams/{pid}/stdout" if pid and self.arng.random() < 0.7 else "/watch/proc."
        slow, life = self.arng.random() < 0.5, self.arng.uniform(0.5, 4)

        def client():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                end = time.monotonic() + life
                while time.monotonic() < end and not self.stop_clients.is_set():
                    if not resp.readline():
                        break
                    if slow:
                        time.sleep(0.3)
                conn.close()
            except (OSError, http.client.HTTPException):
                pass

        self._spawn(client)

    def ws_client(self, forced: tuple | None = None) -> None:
        """A websocket on /channel or /wstreams/<pid>: a reader, or one that never reads;
        `forced` = (path, reads, life, reset) instead of random ones."""
        pid = (self.call("pids", name="counter") or [None])[0]
        path = f"/wstreams/{pid}" if pid and self.arng.random() < 0.5 else "/channel/proc."
        reads, life, reset = self.arng.random() < 0.5, self.arng.uniform(0.5, 4), self.arng.random() < 0.5
        if forced:
            path, reads, life, reset = forced

        def client():
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            try:
                with socket.create_connection(("127.0.0.1", self.gateway.port), timeout=5) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
                    end = time.monotonic() + life
                    while time.monotonic() < end and not self.stop_clients.is_set():
                        if reads and not s.recv(65536):
                            break
                        time.sleep(0.05 if reads else 0.2)
                    # half the clients close cleanly, the others just reset
                    if reset:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass

        self._spawn(client)

    def _spawn(self, target) -> None:
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self.threads.append(t)

    def restart_zsupd(self) -> None:
        sig = self.arng.choice([signal.SIGTERM, signal.SIGKILL])
        self.zsupd.send_signal(sig)
        try:
            self.zsupd.wait(30)
        except subprocess.TimeoutExpired:
            self.report.counts.append(f"zsupd did not stop on {sig.name} within 30 s")
            self.zsupd.kill()
            self.zsupd.wait(5)
        if sig == signal.SIGKILL:
            # the orphan guard kills what zsupd left; give it a moment before the next start
            time.sleep(0.5)
        self.start_zsupd()

    # -- checks ---------------------------------------------------------------------------

    def reached(self) -> list[str]:
        """What differs from the wanted state now ([] when all is as wanted)."""
        problems = []
        status = {row["job"]: row for row in self.call("status") or []}
        for job, n in self.wanted.items():
            row = status.get(job)
            running = [p for p in (row or {}).get("os_pids", []) if _alive(p)]
            if row is None or len(running) != n or row.get("running") != n:
                problems.append(f"{job}: wanted {n}, listed {row and row.get('running')}, alive {len(running)}")
        return problems

    def unlisted(self) -> list[str]:
        """Children of zsupd that are neither listed nor the orphan guard (a listed process's
        own children are its business), and orphans: processes of the soak (its marker in
        their environment) outside the trees of zsupd and zsup-http."""
        listed = {p for row in self.call("status") or [] for p in row.get("os_pids", [])}
        odd, tree = [], {self.zsupd.pid, self.gateway.proc.pid}
        for top in (self.zsupd.pid, self.gateway.proc.pid):
            try:
                tree |= {c.pid for c in psutil.Process(top).children(recursive=True)}
                children = psutil.Process(top).children() if top == self.zsupd.pid else []
            except psutil.NoSuchProcess:
                continue
            for child in children:
                try:
                    if child.pid in listed or "zsup-guard" in child.cmdline():
                        continue
                    if child.status() != psutil.STATUS_ZOMBIE:
                        odd.append(f"unlisted {child.pid} {' '.join(child.cmdline())[:60]}")
                except psutil.NoSuchProcess:
                    pass
        for proc in self.marked():
            if proc.pid not in tree:
                try:
                    odd.append(f"orphan {proc.pid} {' '.join(proc.cmdline())[:60]}")
                except psutil.NoSuchProcess:
                    pass
        return odd

    def resources(self) -> None:
        for name, pid in (("zsupd", self.zsupd.pid), ("zsup-http", self.gateway.proc.pid)):
            try:
                proc = psutil.Process(pid)
                rss, threads = proc.memory_info().rss / 1e6, proc.num_threads()
            except psutil.NoSuchProcess:
                continue
            start = self.base.setdefault(name, threads)
            peak = self.report.peak.setdefault(name, {"rss_mb": 0.0, "threads": 0, "threads_at_start": start})
            peak["rss_mb"], peak["threads"] = max(peak["rss_mb"], round(rss, 1)), max(peak["threads"], threads)
            if rss > self.p.max_rss_mb or threads > start + self.p.max_thread_growth:
                self.report.resources.append(f"{name}: {rss:.0f} MB, {threads} threads (at start: {start})")

    def check_spell(self) -> None:
        self.report.spells += 1
        if wait_until(lambda: not self.reached(), self.p.settle) is None and self.reached():
            self.report.counts.append(f"after {self.report.actions[-self.p.actions:]}: {self.reached()}")
        # an unlisted process may be on its way out (a group being stopped): give it a moment
        odd = self.unlisted()
        if odd and wait_until(lambda: not self.unlisted(), 3) is None:
            self.report.unlisted.append(f"after {self.report.actions[-self.p.actions:]}: {self.unlisted()}")
        self.resources()

    def marked(self) -> list[psutil.Process]:
        """Every process of this uid whose environment holds the soak's marker."""
        found = []
        for proc in psutil.process_iter(["uids"]):
            try:
                if proc.info["uids"] and proc.info["uids"].real == os.getuid() and \
                        proc.environ().get(MARKER) == self.marker and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    def check_lines(self) -> None:
        """Per counter process, its numbers in the log file and on the bus: no gap, no repeat.
        (When zsupd is SIGKILLed, what the counter wrote into the pipe after zsupd's last read
        is lost with the pipe: that cuts the end of a run, never its middle.)"""
        by_proc: dict[str, list[int]] = {}
        logs = os.path.join(self.state_dir, "logs")
        # default.counter.stdout.log(.N): a line is `TIME PID:SEQ DATA`, the data `OS_PID N`;
        # backups first, oldest (highest N) first
        names = [n for n in os.listdir(logs) if n.startswith("default.counter.stdout.log")]
        names.sort(key=lambda n: -int(n.rpartition(".")[2]) if n[-1].isdigit() else 0)
        for name in names:
            for m in re.finditer(r" (\d+) (\d+)$", self.read(os.path.join(logs, name)), re.M):
                by_proc.setdefault(f"log {m[1]}", []).append(int(m[2]))
        for msg, data in self.bus_lines:
            pid, lines = msg.get("os_pid"), data.splitlines()
            # zsup's own numbering (`seq` of the first line, `lines`) and the counter's
            by_proc.setdefault(f"seq {pid}", []).extend(range(msg["seq"], msg["seq"] + msg["lines"]))
            if msg["lines"] != len(lines):
                self.report.lines.append(f"bus {pid}: {len(lines)} lines in a frame that says {msg['lines']}")
            for line in lines:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    by_proc.setdefault(f"bus {pid}", []).append(int(parts[1]))
        for where, numbers in by_proc.items():
            for a, b in zip(numbers, numbers[1:]):
                if b != a + 1:
                    self.report.lines.append(f"{where}: {a} then {b}")
                    break
        for where, numbers in by_proc.items():
            kind = where.split()[0]
            self.report.checked[kind] = self.report.checked.get(kind, 0) + len(numbers)
        if not by_proc:
            self.report.lines.append("no counter line found in the log files or on the bus")

    def read_bus(self) -> None:
        from zsup.bus.client import Subscriber

        with Subscriber(f"ipc://{self.state_dir}/zsupd-pub.sock", ["io.default.counter."]) as sub:
            while not self.stop_clients.is_set():
                ev = sub.recv(0.2)
                if ev is not None and ev.data:
                    self.bus_lines.append((ev.msg, ev.data))

    # -- the run --------------------------------------------------------------------------

    def run(self) -> Report:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "counter.py"), "w") as f:
            f.write(COUNTER)
        self.write_config()
        try:
            self.start_zsupd()
            self.gateway = Gateway(self.state_dir, os.path.join(self.dir, "zsup-http.log"), self.env).start()
            self.resources()
            self._spawn(self.read_bus)
            end = time.monotonic() + self.p.seconds
            while time.monotonic() < end or self.deck:  # at least one whole deck
                for _ in range(self.p.actions):
                    self.act()
                    time.sleep(self.rng.uniform(0, 0.3))
                self.check_spell()
            self.ending()
            self.check_lines()
        finally:
            self.finish()
        return self.report

    def ending(self) -> None:
        """The same last spell for every run, so each check meets its case whatever the
        schedule drew: a worker that forked crashes, a websocket client resets, zsupd is
        SIGKILLed and started again, then (in finish) stopped."""
        self.call("start_job", name="worker")
        self.call("scale", name="worker", n="=2")
        self.wanted["default.worker"] = 2
        wait_until(lambda: not self.reached(), self.p.settle)
        self.report.actions.append("ending")
        for pid in self.os_pids("default.worker")[:1]:
            wait_until(lambda: len(psutil.Process(pid).children()) == 2, 5)
            self._kill(pid, signal.SIGKILL)
        self.ws_client(("/channel/proc.", True, 0.5, True))
        self.check_spell()
        self.zsupd.kill()
        self.zsupd.wait(10)
        time.sleep(0.5)
        self.start_zsupd()
        self.check_spell()

    def gateway_threads(self) -> int:
        try:
            return psutil.Process(self.gateway.proc.pid).num_threads()
        except psutil.NoSuchProcess:
            return 0

    def finish(self) -> None:
        self.stop_clients.set()
        for t in self.threads:
            t.join(10)
        start = self.base.get("zsup-http")
        if self.gateway and self.gateway.alive() and start:
            # what the clients cost must go with them
            if wait_until(lambda: self.gateway_threads() <= start + 8, 10) is None:
                self.report.resources.append(f"zsup-http: {self.gateway_threads()} threads after every client "
                                             f"left (at start: {start})")
        if self.gateway:
            self.gateway.stop()
        if self.zsupd and self.zsupd.poll() is None:
            self.zsupd.terminate()
            try:
                self.zsupd.wait(30)
            except subprocess.TimeoutExpired:
                self.zsupd.kill()
        left = wait_until(lambda: not self.marked(), 10) is None and self.marked()
        for proc in left or []:
            try:
                self.report.leftovers.append(f"{proc.pid} {' '.join(proc.cmdline())[:60]}")
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        for name, path in (("zsupd", self.log_path), ("zsup-http", os.path.join(self.dir, "zsup-http.log"))):
            text = self.read(path)
            if "Traceback" in text:
                i = text.index("Traceback")
                self.report.tracebacks.append(f"{name}: {text[i:i + 1500]}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(params: Params | None = None) -> Report:
    return Soak(params or Params()).run()


def main() -> int:
    params = Params()
    print(f"soak: seed {params.seed}, {params.seconds:.0f} s, {params.actions} actions per spell", flush=True)
    report = run(params)
    print(report.summary())
    bad = any(getattr(report, n) for n in ("counts", "unlisted", "leftovers", "lines", "resources", "tracebacks"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
