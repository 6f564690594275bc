"""Run the ```sh examples of a Markdown file as one story against a real zsupd (docs/testing.md).

A file's ```sh blocks run in order, each with `bash -e` in one scratch folder that holds a
copy of etc/ (its ports replaced, see PORTS) and a `.venv` link to the running virtualenv,
with that virtualenv's bin on PATH and ZSUP_STATE_DIR=./.run. A zsupd started from the copy
of etc/zsup.ini (as `make run` does, gateway included) serves the whole file. Exported
variables and the current folder carry from one block to the next, as in one terminal.

Markers: HTML comments on the lines just before a block's fence (blank lines allowed):
    <!-- docs: skip REASON -->        not run (it cannot run here); the reason is required
    <!-- docs: expect REGEX -->       the block's output (stdout and stderr) must match
    <!-- docs: exit N -->             the block must end with status N, not 0
    <!-- docs: timeout SECONDS -->    its deadline (default BLOCK_TIMEOUT)
    <!-- docs: runs-for SECONDS -->   a command that does not end by itself: stopped after
                                      that long (SIGINT, as Ctrl-C), which counts as success
What a block starts in the background (`cmd &`) runs on for the next blocks, as in a terminal;
every block's process group is killed at the end of the story (at once for a block that ran
out of time), and zsupd is stopped, so nothing outlives the test.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK_TIMEOUT = 20.0
# The ports the docs and etc/zsup.ini use, replaced (as whole numbers) by free ones: the
# gateway, zsup-lookupd, the `web` example server (its instances take the next ones), and
# another server's.
PORTS = (5000, 5010, 8000, 8080)
MARKER = re.compile(r"^<!--\s*docs:\s*(\S+)\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
KEYS = {"skip", "expect", "exit", "timeout", "runs-for"}


class DocsError(AssertionError):
    pass


@dataclasses.dataclass
class Block:
    path: str
    line: int                 # the fence's line, 1-based
    text: str
    skip: str | None = None
    expect: list = dataclasses.field(default_factory=list)
    status: int = 0
    timeout: float = BLOCK_TIMEOUT
    runs_for: float | None = None

    @property
    def where(self) -> str:
        return f"{os.path.relpath(self.path, ROOT)}:{self.line}"


def extract(path: str) -> list[Block]:
    """The ```sh blocks of a Markdown file with their markers; a misused marker is an error."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        if lang == "sh":
            block = Block(path, start + 1, "\n".join(lines[start + 1:i]) + "\n")
            _apply_markers(block, _markers_before(lines, start))
            blocks.append(block)
        elif _markers_before(lines, start):
            raise DocsError(f"{path}:{start + 1}: a docs marker before a ```{lang} block (only ```sh runs)")
        i += 1
    return blocks


def _markers_before(lines: list[str], fence: int) -> list[tuple[str, str, int]]:
    found, j = [], fence - 1
    while j >= 0 and (not lines[j].strip() or MARKER.match(lines[j])):
        m = MARKER.match(lines[j])
        if m:
            found.append((m.group(1), m.group(2), j + 1))
        j -= 1
    return found[::-1]


def _apply_markers(block: Block, markers: list[tuple[str, str, int]]) -> None:
    for key, value, line in markers:
        where = f"{block.path}:{line}"
        if key not in KEYS:
            raise DocsError(f"{where}: unknown docs marker {key!r} (one of {', '.join(sorted(KEYS))})")
        if key == "skip":
            if not value:
                raise DocsError(f"{where}: docs: skip needs a reason")
            block.skip = value
        elif key == "expect":
            block.expect.append(value)
        else:
            try:
                number = float(value)
            except ValueError:
                raise DocsError(f"{where}: docs: {key} needs a number, got {value!r}") from None
            if key == "exit":
                block.status = int(number)
            elif key == "timeout":
                block.timeout = number
            else:
                block.runs_for = number


def free_port(span: int = 1) -> int:
    """A loopback port that is free now, with the `span - 1` ports after it free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65536 and all(_free(p) for p in range(port + 1, port + span)):
            return port
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def substitute(text: str, ports: dict[int, int]) -> str:
    for doc_port, port in ports.items():
        text = re.sub(rf"(?<![\d.]){doc_port}(?![\d])", str(port), text)
    return text


class Story:
    """One scratch folder, one zsupd (and its gateway) for the blocks of one file."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self.ports = {5000: free_port(), 5010: free_port(), 8000: free_port(span=10), 8080: free_port()}
        self.state_dir = os.path.join(self.dir, ".run")
        self.env_file = os.path.join(self.dir, ".docs-env")
        self.bin = os.path.dirname(sys.executable)
        self.zsupd = None
        self._log = None
        self.times: list[tuple[str, float]] = []  # (block, seconds), for a slow story
        self.groups: list[int] = []  # process groups of blocks that ended, killed by stop()

    def prepare(self) -> None:
        etc = os.path.join(self.dir, "etc")
        shutil.copytree(os.path.join(ROOT, "etc"), etc)
        config = os.path.join(etc, "zsup.ini")
        with open(config) as f:
            text = substitute(f.read(), self.ports)
        with open(config, "w") as f:
            f.write(text)
        os.symlink(os.path.dirname(self.bin), os.path.join(self.dir, ".venv"))
        os.mkdir(self.state_dir, 0o700)
        # curl as the docs use it, but failing on an HTTP error (exit 22, the body still
        # shown), quiet about progress, and each answer on a line of its own
        with open(os.path.join(self.dir, ".curlrc"), "w") as f:
            f.write('fail-with-body\nsilent\nshow-error\nconnect-timeout = 5\nwrite-out = "\\n"\n')
        self.env = dict(os.environ, PATH=self.bin + os.pathsep + os.environ.get("PATH", ""),
                        ZSUP_STATE_DIR=self.state_dir, PYTHONUNBUFFERED="1", CURL_HOME=self.dir,
                        HOME=self.dir)  # what an example writes to ~ stays in the scratch folder
        self.env.pop("VIRTUAL_ENV", None)

    def start(self, timeout: float = 20) -> None:
        """zsupd from etc/zsup.ini as `make run` starts it; returns when the gateway answers."""
        self._log = open(os.path.join(self.dir, "zsupd.log"), "ab")
        self.zsupd = subprocess.Popen(
            [os.path.join(self.bin, "zsupd"), "-c", "etc/zsup.ini", "--state-dir", self.state_dir,
             "--pidfile", os.path.join(self.state_dir, "zsupd.pid")],
            cwd=self.dir, env=self.env, stdout=self._log, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports[5000]}/ping"
        while True:
            if self.zsupd.poll() is not None:
                raise DocsError(f"zsupd exited with {self.zsupd.returncode}:\n{self.log()}")
            done = subprocess.run(["curl", "-q", "-sf", "-m", "1", url], capture_output=True)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DocsError(f"the gateway did not answer {url} in {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "zsupd.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def run(self, block: Block) -> str:
        """Run one block; its output, or DocsError naming the block, its status and output."""
        script = os.path.join(self.dir, ".docs-block.sh")
        with open(script, "w") as f:
            # what a terminal keeps from one command to the next: exports and the folder
            f.write(f"[ -f {self.env_file} ] && . {self.env_file}\n"
                    f"trap '{{ export -p; echo \"cd $(printf %q \"$PWD\")\"; }} > {self.env_file}' EXIT\n"
                    "set -e\n")
            f.write(substitute(block.text, self.ports))
        # one file per block: what a block left in the background may still write to its own
        out_path = os.path.join(self.dir, f".docs-block-{len(self.times) + 1}.out")
        started = time.monotonic()
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(["bash", "--noprofile", "--norc", script], cwd=self.dir, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            limit = block.runs_for if block.runs_for is not None else block.timeout
            try:
                status = proc.wait(limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                if block.runs_for is not None:  # Ctrl-C, as a reader would stop it
                    _kill_group(proc.pid, signal.SIGINT)
                    try:
                        proc.wait(3)
                    except subprocess.TimeoutExpired:
                        pass
            finally:
                if timed_out:
                    _kill_group(proc.pid)
                else:  # what it started with `&` runs on, as in a terminal, until stop()
                    self.groups.append(proc.pid)
                proc.wait()
        self.times.append((block.where, time.monotonic() - started))
        with open(out_path, errors="replace") as f:
            output = f.read()
        if timed_out and block.runs_for is None:
            raise DocsError(f"{block.where}: still running after {block.timeout} s\n{_show(block, output)}")
        if not timed_out and status != block.status:
            raise DocsError(f"{block.where}: exit status {status} (expected {block.status})\n"
                            f"{_show(block, output)}")
        for pattern in block.expect:
            if not re.search(substitute(pattern, self.ports), output, re.MULTILINE):
                raise DocsError(f"{block.where}: output does not match {pattern!r}\n{_show(block, output)}")
        return output

    def stop(self) -> None:
        for pgid in self.groups:
            _kill_group(pgid)
        if self.zsupd is None:
            return
        try:
            kids = psutil.Process(self.zsupd.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        if self.zsupd.poll() is None:
            self.zsupd.terminate()
            try:
                self.zsupd.wait(20)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.zsupd.pid)
        for kid in kids:  # each child has a process group of its own
            try:
                kid.kill()
            except psutil.Error:
                pass
        self.zsupd.wait()
        self._log.close()


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _show(block: Block, output: str) -> str:
    tail = output[-4000:]
    return f"--- block ---\n{block.text}--- output ---\n{tail}"


def markdown_files() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    return ["README.md"] + sorted(os.path.join("docs", n) for n in os.listdir(docs) if n.endswith(".md"))
