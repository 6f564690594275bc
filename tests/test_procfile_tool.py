"""The `zsup` Procfile tool, as a user runs it: real Procfiles, real processes, a real zsupd.

`start` and `run` run as subprocesses (signals and exit codes are what is tested); the
commands that only talk to zsupd run in-process through `main()` for speed, against a real
zsupd subprocess.
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
from conftest import PYTHON, ROOT, alive, kill_tree, wait_for

from zsup import __version__
from zsup.bus.client import Client
from zsup.cli.procfile_tool import build_parser, finish_args, format_uptime, main, parse_scale_specs
from zsup.errors import BadRequest
from zsup.services.procfile import Procfile

# The manual's example says `python`; use this interpreter when `python` is not on PATH.
PY_CMD = "python" if shutil.which("python") else PYTHON
DUMMY_BASIC = """\
import os, time
print(f"hello, dummy (pid: {os.getpid()}) is alive", flush=True)
while True:
    time.sleep(1)
"""
MANUAL_PROCFILE = f"dummy: {PY_CMD} -u dummy_basic.py\ndummy1: {PY_CMD} -u dummy_basic.py\n"
SPAWN_RE = re.compile(r"^\d\d:\d\d:\d\d (\S+)\.(\d+) +\| spawn process with pid (\d+)$")


@pytest.fixture
def app(tmp_path):
    """The manual's example application in a folder named `examples`."""
    root = tmp_path / "examples"
    root.mkdir()
    (root / "dummy_basic.py").write_text(DUMMY_BASIC)
    (root / "Procfile").write_text(MANUAL_PROCFILE)
    return root


def tool(*argv, **kw):
    """Run `python -m zsup.cli.procfile_tool` as a subprocess (Popen, text pipes)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NO_COLOR", None)
    return subprocess.Popen([PYTHON, "-m", "zsup.cli.procfile_tool", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


class Lines:
    """Collect a pipe's lines in a thread, so a test can wait for one with a deadline."""

    def __init__(self, pipe):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe):
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def matching(self, pattern):
        return [m for m in map(re.compile(pattern).search, list(self.lines)) if m]


def stop_tool(proc):
    if proc.poll() is None:
        kids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] if alive(proc.pid) else []
        proc.kill()
        proc.wait(10)
        kill_tree(kids)


def run_main(capsys, *argv):
    """main() in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsup: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def running_counts(d, session):
    return {r["job"]: r["running"] for r in d.call("status") if r["job"].startswith(session + ".")}


# ============================================================================ small pieces
@pytest.mark.parametrize("seconds, text", [(0.44, "0:00.44"), (75.5, "1:15.50"), (3599.99, "59:59.99"),
                                           (3725, "1:02:05"), (-1, "0:00.00")])
def test_format_uptime(seconds, text):
    assert format_uptime(seconds) == text


def test_parse_scale_specs():
    assert parse_scale_specs(["web=3", "worker+2", "other-1"]) == (None, [("web", "=3"), ("worker", "+2"),
                                                                         ("other", "-1")])
    assert parse_scale_specs(["myapp", "my-web-2"]) == ("myapp", [("my-web", "-2")])
    with pytest.raises(BadRequest):
        parse_scale_specs(["myapp"])
    with pytest.raises(BadRequest):
        parse_scale_specs(["web=3", "worker=x"])


def test_version_and_help_everywhere(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"zsup {__version__}"
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for sub in ("start", "load", "unload", "scale", "ps", "run", "export"):
        assert sub in out
        code, sub_out, _ = run_main(capsys, sub, "--help")
        assert code == 0 and f"usage: zsup {sub}" in sub_out
        usage = sub_out.split("\n\n")[0]
        for option in ("--procfile", "--directory", "--env", "--endpoint"):
            # global options are shown once, in `zsup --help` (issue 19), and still accepted
            # after the subcommand
            assert option in out and option not in usage
        assert finish_args(build_parser().parse_args([sub, "-d", "/tmp", "--endpoint", "ipc://x"]
                                                     + (["web=1"] if sub == "scale" else []))).directory == "/tmp"
    code, _, err = run_main(capsys, "frobnicate")
    assert_one_line_error(code, err)


# ============================================================================ zsup start
def test_start_runs_the_manual_example_and_ctrl_c_stops_everything(app):
    proc = tool("start", cwd=str(app))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: len(out.matching(r"hello, dummy \(pid: \d+\) is alive")) == 2, timeout=15,
                 message="both dummies to greet")
        spawns = [SPAWN_RE.match(line) for line in list(out.lines)]
        spawns = [m for m in spawns if m]
        assert sorted(m.group(1) for m in spawns) == ["dummy", "dummy1"]
        os_pids = [int(m.group(3)) for m in spawns]
        descendants = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert set(os_pids) <= set(descendants)
        for name, pid in {(m.group(1), m.group(2)) for m in spawns}:
            assert out.matching(rf"^\d\d:\d\d:\d\d {name}\.{pid} +\| hello, dummy")  # prefix on output lines
        assert not out.matching("\x1b\\[")  # not a tty: no colour

        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read()
        out.thread.join(5)
        for os_pid in descendants:
            assert not alive(os_pid), f"{os_pid} outlived zsup start"
        assert len(out.matching(r"\| exit process with pid \d+")) == 2
    finally:
        stop_tool(proc)


def test_start_one_type_with_env_substitution_and_sigterm(app):
    (app / "Procfile").write_text(MANUAL_PROCFILE + "greet: echo \"greeting=$GREETING\"; exec sleep 60\n")
    (app / ".env").write_text("GREETING='hello from .env'\n")
    proc = tool("start", "greet", cwd=str(app))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: out.matching(r"greet\.\d+ +\| greeting=hello from \.env$"), timeout=15,
                 message="the greeting with the .env value")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()
        out.thread.join(5)
        assert not out.matching(r"dummy")  # only the named type ran
    finally:
        stop_tool(proc)


def test_start_concurrency_and_other_env_file(app, tmp_path):
    (app / "Procfile").write_text("w: echo \"$WHO\"; exec sleep 60\n")
    env_file = tmp_path / "other.env"
    env_file.write_text("WHO=someone-else\n")
    # global options after the subcommand, a Procfile given by path, run from elsewhere
    proc = tool("start", "-c", "w=2", "-f", str(app / "Procfile"), "-e", str(env_file), cwd=str(tmp_path))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: len(out.matching(r"\| someone-else$")) == 2, timeout=15, message="two greetings")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        stop_tool(proc)


# ============================================================================ zsup run
def test_run_passes_the_exit_code_and_uses_the_app_environment(app):
    (app / ".env").write_text("GREETING=hi\n")
    proc = tool("run", "echo \"$GREETING\" from $(pwd); exit 3", cwd=str(app))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, err
    assert out.strip() == f"hi from {app}"

    proc = tool("-d", str(app), "run", PYTHON, "-c", "import os, sys; print(os.environ['GREETING']); sys.exit(7)")
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out.strip()) == (7, "hi")


# ============================================================================ load / scale / ps / unload
def test_manual_example_load_scale_ps_unload(app, zsupd_factory, capsys, monkeypatch):
    d = zsupd_factory()
    monkeypatch.chdir(app)
    code, out, err = run_main(capsys, "--endpoint", d.bus, "load")
    assert code == 0, err
    assert d.call("jobs", session="examples") == ["examples.dummy", "examples.dummy1"]
    wait_for(lambda: running_counts(d, "examples") == {"examples.dummy": 1, "examples.dummy1": 1},
             message="both jobs running")

    code, out, err = run_main(capsys, "scale", "dummy=3", "dummy1+2", "--endpoint", d.bus)
    assert code == 0, err
    assert out.splitlines() == ["Scaling dummy processes... done, now running 3",
                                "Scaling dummy1 processes... done, now running 3"]
    wait_for(lambda: running_counts(d, "examples") == {"examples.dummy": 3, "examples.dummy1": 3},
             message="three of each")

    code, out, err = run_main(capsys, "ps", "--endpoint", d.bus)
    assert code == 0, err
    lines = out.splitlines()
    cmd = f"{PY_CMD} -u dummy_basic.py"
    assert lines[0] == f"=== dummy: `{cmd}`"
    assert re.fullmatch(r"Total CPU: \d+\.\d{6} Total MEM: \d+\.\d\d", lines[1])
    assert lines[2] == ""
    assert all(re.fullmatch(r"dummy\.\d+: up for \d+:\d\d\.\d\d", line) for line in lines[3:6]), lines
    assert lines[6] == f"=== dummy1: `{cmd}`"
    assert all(re.fullmatch(r"dummy1\.\d+: up for \d+:\d\d\.\d\d", line) for line in lines[9:12]), lines
    assert len(lines) == 12
    pids = {int(line.split(":")[0].split(".")[1]) for line in lines[3:6]}
    assert pids == set(d.call("pids", name="examples.dummy"))

    scaled_down = run_main(capsys, "scale", "examples", "dummy-2", "--endpoint", d.bus)
    assert scaled_down[:2] == (0, "Scaling dummy processes... done, now running 1\n")

    os_pids = [p["os_pid"] for j in ("examples.dummy", "examples.dummy1")
               for p in d.call("info", name=j)["processes"]]
    code, out, err = run_main(capsys, "unload", ".", "--endpoint", d.bus)
    assert code == 0, err
    assert d.call("jobs", session="examples") == []
    wait_for(lambda: not any(alive(p) for p in os_pids), message="the app's processes to stop")


def test_load_named_app_with_concurrency_and_unload(app, zsupd_factory, capsys):
    d = zsupd_factory()
    code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(app), "load", "-c", "dummy=2,dummy1=0", "shop")
    assert code == 0, err
    assert d.call("get", name="shop.dummy")["numprocesses"] == 2
    assert d.call("get", name="shop.dummy1")["numprocesses"] == 0
    assert d.call("get", name="shop.dummy")["cwd"] == str(app)
    code, _, err = run_main(capsys, "--endpoint", d.bus, "unload", "shop")
    assert code == 0, err
    assert d.call("sessions") == []
    code, _, err = run_main(capsys, "--endpoint", d.bus, "unload", "shop")
    assert_one_line_error(code, err, "shop")


def test_load_is_all_or_nothing(app, zsupd_factory, capsys):
    d = zsupd_factory()
    d.call("load", config={"name": "dummy1", "cmd": "sleep 60"}, session="examples")
    code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(app), "load")
    assert_one_line_error(code, err, "examples.dummy1", "already loaded")
    assert d.call("jobs", session="examples") == ["examples.dummy1"]


def test_http_endpoint_sends_bus_commands_to_the_gateway(app, zsupd_factory, capsys):
    """Stands in for the HTTP gateway's assumed `POST /bus/<cmd>` route (see docs/procfile.md)."""
    d = zsupd_factory()

    class BusOverHttp(BaseHTTPRequestHandler):
        def do_POST(self):
            cmd = self.path.rsplit("/", 1)[1]
            args = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with Client(d.bus, timeout=10) as client:
                try:  # the gateway's answers (zsup/http/routes_api.py, bus_command)
                    reply, status = {"result": client.request(cmd, args)}, 200
                except Exception as exc:
                    reply, status = {"error": exc.to_dict()}, 404
            body = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), BusOverHttp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, _, err = run_main(capsys, "--endpoint", endpoint, "-d", str(app), "load", "-c", "dummy1=0")
        assert code == 0, err
        assert d.call("jobs", session="examples") == ["examples.dummy", "examples.dummy1"]
        code, out, err = run_main(capsys, "--endpoint", endpoint, "-d", str(app), "scale", "dummy1=2")
        assert (code, out) == (0, "Scaling dummy1 processes... done, now running 2\n"), err
        code, _, err = run_main(capsys, "--endpoint", endpoint, "-d", str(app), "scale", "nope=1")
        assert_one_line_error(code, err, "nope")
        code, _, err = run_main(capsys, "--endpoint", endpoint, "unload", "examples")
        assert code == 0, err
        code, _, err = run_main(capsys, "--endpoint", endpoint, "unload", "examples")
        assert_one_line_error(code, err, "examples")
    finally:
        server.shutdown()
        server.server_close()


# ============================================================================ export
EXPORT_PROCFILE = "web: sleep 60 # port $PORT\nworker: sh -c 'sleep 60, and more'\n"
INI_PROCFILE = "web: echo \"port $PORT\" && exec sleep 60\nworker: sh -c 'exec sleep 60' >/dev/null\n"


def assert_same_jobs(d, jobs):
    for job in jobs:
        got = d.call("get", name=f"{job['session']}.{job['name']}")
        assert {key: got[key] for key in job} == job


def test_export_json_loads_back_as_the_same_jobs(tmp_path, zsupd_factory, capsys):
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(EXPORT_PROCFILE)
    (root / ".env").write_text("PORT=5000\nGREETING='a, b # c'\n")
    out_file = tmp_path / "jobs.json"
    code, _, err = run_main(capsys, "-d", str(root), "export", "--format", "json", "--out", str(out_file),
                            "-c", "web=2")
    assert code == 0, err
    jobs = json.loads(out_file.read_text())
    assert jobs == Procfile.load(str(root / "Procfile")).job_dicts({"web": 2}, port=5000)  # PORT from .env
    d = zsupd_factory()
    for job in jobs:
        d.call("load", config=job)
    assert d.call("jobs", session="shop") == ["shop.web", "shop.worker"]
    assert_same_jobs(d, jobs)


def test_export_ini_in_a_zsupd_config_gives_the_same_jobs(tmp_path, zsupd_factory, capsys):
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(INI_PROCFILE)
    (root / ".env").write_text("PORT=5000\nGREETING='a, b # c'\n")
    code, ini, err = run_main(capsys, "export", "-f", str(root / "Procfile"), "-c", "worker=0")
    assert code == 0, err
    assert "[process:shop:web]" in ini
    d = zsupd_factory(ini)
    # zsupd may answer ping a moment before it has loaded its config's jobs
    wait_for(lambda: d.call("jobs", session="shop") == ["shop.web", "shop.worker"], message="the exported jobs")
    assert_same_jobs(d, Procfile.load(str(root / "Procfile")).job_dicts({"worker": 0}, port=5000))


def test_export_ini_refuses_what_zsupd_would_read_differently(tmp_path, capsys):
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(EXPORT_PROCFILE)
    out_file = tmp_path / "shop.ini"
    code, out, err = run_main(capsys, "-d", str(root), "export", "--out", str(out_file))
    assert_one_line_error(code, err, "shop.web", "--format json")
    assert out == "" and not out_file.exists()


# ============================================================================ bad input
def test_bad_input_is_one_line_and_changes_nothing(app, tmp_path, zsupd_factory, capsys):
    d = zsupd_factory()
    missing = tmp_path / "nowhere"
    missing.mkdir()
    for argv in (["start"], ["load"], ["export"], ["run", "true"]):
        code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(missing), *argv)
        assert_one_line_error(code, err, "no such Procfile")

    for argv in (["start", "-c", "nope=2"], ["load", "-c", "nope=2"], ["export", "-c", "nope=1"],
                 ["start", "nope"]):
        code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(app), *argv)
        assert_one_line_error(code, err, "unknown process type 'nope'")
    for value in ("dummy", "dummy=x", "dummy=-1", "=3"):
        code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(app), "load", "-c", value)
        assert_one_line_error(code, err, "concurrency")
    assert d.call("sessions") == []

    # scale: an unknown type (or a malformed order) anywhere scales nothing
    assert run_main(capsys, "--endpoint", d.bus, "-d", str(app), "load")[0] == 0
    for argv in (["dummy=2", "nope+1"], ["dummy=2", "dummy1=x"], ["dummy=2", "dummy1"]):
        code, out, err = run_main(capsys, "--endpoint", d.bus, "-d", str(app), "scale", *argv)
        assert_one_line_error(code, err)
        assert out == ""
    assert d.call("get", name="examples.dummy")["numprocesses"] == 1
    assert d.call("info", name="examples.dummy")["numprocesses"] == 1
    code, _, err = run_main(capsys, "--endpoint", d.bus, "scale", "unknownapp", "dummy=2")
    assert_one_line_error(code, err, "unknownapp")
    code, _, err = run_main(capsys, "--endpoint", d.bus, "ps", "unknownapp")
    assert_one_line_error(code, err, "unknownapp")


def test_no_zsupd_at_the_endpoint(app, tmp_path):
    endpoint = f"ipc://{tmp_path}/none.sock"
    for argv in (["load"], ["unload"], ["scale", "dummy=2"], ["ps"]):
        proc = tool("--endpoint", endpoint, *argv, cwd=str(app))
        out, err = proc.communicate(timeout=20)
        assert_one_line_error(proc.returncode, err, "no zsupd", endpoint)


def test_start_second_ctrl_c_kills_what_ignores_the_stop_signal(tmp_path):
    root = tmp_path / "stubborn"
    root.mkdir()
    (root / "Procfile").write_text("stubborn: trap '' TERM; echo ready; while true; do sleep 0.05; done\n")
    proc = tool("start", cwd=str(root))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: out.matching(r"\| ready$"), timeout=15, message="the stubborn process")
        os_pid = int(out.matching(r"spawn process with pid (\d+)")[0].group(1))
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: out.matching(r"zsup +\| stopping all processes"), message="the stop notice")
        assert alive(os_pid)  # graceful_timeout is 30 s: still waiting for it
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 1
        wait_for(lambda: not alive(os_pid), message="the stubborn process to be killed")
    finally:
        stop_tool(proc)


def test_start_colours_its_prefixes_on_a_terminal(app):
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.procfile_tool", "start", "dummy"], cwd=str(app),
                            stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    seen = b""
    try:
        def coloured_greeting():
            nonlocal seen
            if select.select([master], [], [], 0.1)[0]:  # never block past wait_for's deadline
                seen += os.read(master, 65536)
            return b"hello, dummy" in seen
        wait_for(coloured_greeting, timeout=15, message="a greeting on the terminal")
        assert re.search(rb"\x1b\[\d+m\d\d:\d\d:\d\d dummy\.\d+ +\|\x1b\[0m hello, dummy", seen), seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        stop_tool(proc)
        os.close(master)
