"""zsup.daemon.config: gaffer's config files load as written; every bad file is refused in one line
naming file, section and key."""

import os
import signal
import subprocess

import pytest
from conftest import readline_within

from zsup.core.flapping import FlappingRule
from zsup.daemon.config import ConfigError, DaemonConfig, load_config, parse_config
from zsup.errors import BadRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")

# The example of the gafferd page (seeds/002), as written.
GAFFERD_EXAMPLE = """\
[gaffer]
http_endpoints = public

[endpoint:public]
bind = 127.0.0.1:5000
;certfile=
;keyfile=

[webhooks]
;create = http://some/url
;proc.dummy.spawn = http://some/otherurl


[process:dummy]
cmd = ./dummy.py
;cwd = .
;uid =
;gid =
;detach = false
;shell = false
; flapping format: attempts=2, window=1., retry_in=7., max_retry=5
;flapping = 2, 1., 7., 5
numprocesses = 1
redirect_output = stdout, stderr
; redirect_input  = true
; graceful_timeout = 30

[process:echo]
cmd = ./echo.py
numprocesses = 1
redirect_output = stdout, stderr
redirect_input  = true
"""

# The manual's first example (seeds/001) and its [env:dummy] section.
MANUAL_EXAMPLE = """\
[process:dummy]
cmd = ./dummy.py
numprocesses = 1
redirect_output = stdout, stderr

[env:dummy]
port = 80
"""


def write(tmp_path, text, name="zsup.ini"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(tmp_path, text) -> str:
    """The one-line message a bad file gets (file named as given: zsup.ini in tmp_path)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(path)
    return message[len(path):]


def test_gafferd_example_loads_as_written(tmp_path):
    cfg = load_config(write(tmp_path, GAFFERD_EXAMPLE, "gaffer.ini"))
    assert isinstance(cfg, DaemonConfig)
    assert cfg.http_endpoints == ["public"] == cfg.settings["http_endpoints"]
    assert cfg.endpoints["public"] == {"bind": "127.0.0.1:5000", "certfile": None, "keyfile": None,
                                       "backlog": 1024, "auth_file": None, "tokens_file": None}
    assert cfg.webhooks == []
    dummy, echo = cfg.jobs
    assert (dummy.session, dummy.name, dummy.cmd) == ("default", "dummy", "./dummy.py")
    assert dummy.cwd == str(tmp_path)  # ./dummy.py runs next to the config file
    assert dummy.redirect_output == ["stdout", "stderr"] and dummy.redirect_input is False
    assert dummy.flapping is None and dummy.uid is None and dummy.numprocesses == 1
    assert echo.redirect_input is True and echo.fullname == "default.echo"
    assert [d["name"] for d in cfg.job_dicts()] == ["dummy", "echo"]
    assert cfg.raw["process:echo"]["cmd"] == "./echo.py"


def test_manual_example_env_section_upper_cases_keys(tmp_path):
    cfg = load_config(write(tmp_path, MANUAL_EXAMPLE))
    (job,) = cfg.jobs
    assert job.env == {"PORT": "80"}
    assert cfg.http_endpoints == [] and cfg.endpoints == {}


def test_groups_and_their_env(tmp_path):
    cfg = load_config(write(tmp_path, """\
[process:test:dummy]
cmd = python3
args = dummy.py --greeting "hello world"
cwd = .
[env:test:dummy]
Port = 81
[process:dummy]
cmd = python3
"""))
    grouped, plain = cfg.jobs
    assert grouped.fullname == "test.dummy" and grouped.env == {"PORT": "81"}
    assert grouped.args == ["dummy.py", "--greeting", "hello world"]
    assert grouped.cwd == str(tmp_path)
    assert plain.fullname == "default.dummy" and plain.env == {} and plain.cwd is None


def test_comments_and_values(tmp_path):
    (tmp_path / "work").mkdir()
    cfg = load_config(write(tmp_path, """\
; a comment
  ;indented = comment
# another
[zsup]   ; trailing comment on a header line is fine too
;http_endpoints = nothing
log_max_bytes = 2M # inline comment after whitespace
log_rotate = hourly
insecure_tcp = yes
ring_size = "50"
[webhooks]
create = http://hooks.example/created#anchor
proc.dummy.spawn = "https://hooks.example/a # b"
[process:web]
cmd = sh -c "echo a; echo '#1' # still the command"  # a comment
cwd = work
flapping = 2, 1., 7., 5
numprocesses = 0
;numprocesses=3
stop_signal = INT
[env:web]
greeting = "hello world"
semi = a;b
"""))
    assert cfg.settings["log_max_bytes"] == 2 * 1024 * 1024
    assert cfg.settings["log_rotate"] == "hourly" and cfg.settings["insecure_tcp"] is True
    assert cfg.settings["ring_size"] == 50
    assert cfg.webhooks == [("create", "http://hooks.example/created#anchor"),
                            ("proc.dummy.spawn", "https://hooks.example/a # b")]
    (job,) = cfg.jobs
    assert job.cmd == """sh -c "echo a; echo '#1' # still the command\""""
    assert job.cwd == str(tmp_path / "work")
    assert job.flapping == FlappingRule(2, 1.0, 7.0, 5)
    assert job.numprocesses == 0 and job.stop_signal == signal.SIGINT
    assert job.ring_size == 50  # [zsup] ring_size is the jobs' default
    assert job.env == {"GREETING": "hello world", "SEMI": "a;b"}


def test_settings_defaults_follow_state_dir_and_overrides_win(tmp_path):
    cfg = parse_config("[zsup]\nstate_dir = run\n", str(tmp_path / "zsup.ini"))
    state = str(tmp_path / "run")
    s = cfg.settings
    assert s["state_dir"] == state
    assert s["bus"] == f"ipc://{state}/zsupd.sock" and s["pub"] == f"ipc://{state}/zsupd-pub.sock"
    assert s["log_dir"] == os.path.join(state, "logs")
    assert (s["log_max_bytes"], s["log_backups"], s["log_format"], s["log_rotate"]) == (
        10 * 1024 * 1024, 10, "text", None)
    assert s["bus_tcp"] is None and s["insecure_tcp"] is False and s["pidfile"] is None
    assert s["plugin_dir"] == os.path.join(state, "plugins")

    cfg = parse_config("[zsup]\nstate_dir = run\n", str(tmp_path / "zsup.ini"),
                       overrides={"state_dir": "/tmp/elsewhere", "pidfile": None, "log_backups": 3})
    assert cfg.settings["state_dir"] == "/tmp/elsewhere"
    assert cfg.settings["bus"] == "ipc:///tmp/elsewhere/zsupd.sock"
    assert cfg.settings["log_backups"] == 3 and cfg.settings["pidfile"] is None


def test_default_state_dir_is_the_one_every_tool_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSUP_STATE_DIR", str(tmp_path / "state"))
    s = parse_config("").settings
    assert s["state_dir"] == str(tmp_path / "state")
    assert s["bus"] == f"ipc://{tmp_path}/state/zsupd.sock"
    monkeypatch.delenv("ZSUP_STATE_DIR")
    assert parse_config("").settings["state_dir"] == os.path.expanduser("~/.zsup")


def test_load_config_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "[zsup]\n"), {"bus": "ipc:///tmp/x.sock"})
    assert cfg.settings["bus"] == "ipc:///tmp/x.sock"


def test_endpoint_files_and_tcp_security(tmp_path):
    for name in ("cert.pem", "key.pem", "htpasswd", "tokens", "server.key_secret"):
        (tmp_path / name).write_text("x")
    cfg = load_config(write(tmp_path, """\
[zsup]
http_endpoints = tls
bus_tcp = tcp://127.0.0.1:5555
curve_secret_key_file = server.key_secret
[endpoint:tls]
bind = [::1]:8443
certfile = cert.pem
keyfile = key.pem
backlog = 64
auth_file = htpasswd
tokens_file = tokens
"""))
    ep = cfg.endpoints["tls"]
    assert ep["bind"] == "[::1]:8443" and ep["backlog"] == 64
    assert ep["certfile"] == str(tmp_path / "cert.pem") and ep["tokens_file"] == str(tmp_path / "tokens")
    assert cfg.settings["curve_secret_key_file"] == str(tmp_path / "server.key_secret")


@pytest.mark.parametrize("text, expected", [
    ("[zsup]\n[foo]\n", ": [foo] unknown section"),
    ("[process:a:b:c]\ncmd = x\n", ": [process:a:b:c] unknown section"),
    ("[zsup]\nfoo = 1\n", ": [zsup] foo: unknown key"),
    ("[gaffer]\nring_size = ten\n", ": [gaffer] ring_size: expected an integer, got 'ten'"),
    ("[zsup]\nlog_max_bytes = lots\n", ": [zsup] log_max_bytes: expected a size"),
    ("[zsup]\nlog_rotate = weekly\n", ": [zsup] log_rotate: expected daily, hourly or none"),
    ("[zsup]\nbus = http://x\n", ": [zsup] bus: expected a ipc:// or tcp:// endpoint"),
    ("[zsup]\nbus_tcp = tcp://0.0.0.0:5555\n", ": [zsup] bus_tcp: a TCP endpoint needs curve_secret_key_file"),
    ("[zsup]\ncurve_authorized_keys = nowhere\n", ": [zsup] curve_authorized_keys: no such directory"),
    ("[zsup]\nhttp_endpoints = public, admin\n[endpoint:public]\n",
     ": [zsup] http_endpoints: no [endpoint:admin] section for 'admin'"),
    ("[zsup]\n[gaffer]\n", ": [gaffer] cannot be used together with [zsup]: use one"),
    ("[endpoint:public]\nbind = 5000\n", ": [endpoint:public] bind: expected HOST:PORT or unix:PATH"),
    ("[endpoint:public]\nport = 5000\n", ": [endpoint:public] port: unknown key"),
    ("[endpoint:public]\ncertfile = missing.pem\n", ": [endpoint:public] certfile: no such file"),
    ("[endpoint:public]\nbacklog = -1\n", ": [endpoint:public] backlog: must be >= 1, got '-1'"),
    ("[webhooks]\ncreate = ftp://x/y\n", ": [webhooks] create: expected an http:// or https:// URL"),
    ("[process:web]\ncmd = x\nnumprocesses = -1\n", ": [process:web] numprocesses: must be >= 0, got '-1'"),
    ("[process:web]\ncmd = x\nnumprocesses = many\n", ": [process:web] numprocesses: expected an integer"),
    ("[process:web]\ncmd = x\ngraceful_timeout = soon\n", ": [process:web] graceful_timeout: expected a number"),
    ("[process:web]\ncmd = x\nflapping = 2, 1.\n", ": [process:web] flapping: expected 4 values"),
    ("[process:web]\ncmd = x\nflapping = 0, 1., 7., 5\n", ": [process:web] flapping: attempts >= 1"),
    ("[process:web]\nnumprocesses = 1\n", ": [process:web] cmd: a command is required"),
    ("[process:web]\ncmd = x\nfoo = 1\n", ": [process:web] foo: unknown key"),
    ("[process:web]\ncmd = x\nenv = A=1\n", ": [process:web] env: use an [env:web] section"),
    ("[process:web]\ncmd = x\ncwd = nowhere\n", ": [process:web] cwd: no such directory"),
    ("[process:web]\ncmd = x\nredirect_input = maybe\n", ": [process:web] redirect_input: expected true or false"),
    ("[process:web]\ncmd = x\nstop_signal = NOPE\n", ": [process:web] stop_signal:"),
    ("[process:web.app]\ncmd = x\n", ": [process:web.app] name: 'web.app' is not a valid name"),
    ("[process:web]\ncmd = x\n[process:default:web]\ncmd = y\n",
     ": [process:default:web] duplicate job default.web (also [process:web])"),
    ("[env:web]\nport = 80\n", ": [env:web] no [process:web] section for it"),
    ("[process:web]\ncmd = x\n[env:web]\nport = 1\nPORT = 2\n", ": [env:web] PORT: duplicate or invalid"),
    ("ring_size = 1\n[zsup]\n", ": ring_size: keys must be inside a section"),
    ("[process:web]\ncmd = x\n[[sub]]\n", ": [process:web] subsection [[sub]] is not allowed"),
    ("[zsup]\nring_size = 1\n\n[process:web]\ncmd = x\nnumprocesses = 1\nnumprocesses = 2\n",
     ":7: [process:web] numprocesses: duplicate key"),
    ("[process:web]\ncmd = x\n[process:web]\n", ":3: [process:web] duplicate section"),
    ("[process:web]\ncmd = x\nthis is not a key\n", ":3: [process:web] cannot parse 'this is not a key'"),
])
def test_bad_files_are_refused_with_file_section_key(tmp_path, text, expected):
    message = refused(tmp_path, text)
    assert message.startswith(expected), message



def test_values_reach_configobj_verbatim(tmp_path):
    """Quotes and triple quotes inside values are kept as written but for one pair around the
    whole value (configobj reads each value inside triple quotes); only a value with both
    kinds of triple quotes is refused."""
    cfg = parse_config("[process:web]\ncmd = echo it'\n[env:web]\n"
                       "A = a\'\'\'b\nB = \"\"\"c\"\"\"\nC = x'\nD =\n")
    job = cfg.jobs[0]
    assert job.cmd == "echo it'"
    assert job.env == {"A": "a\'\'\'b", "B": '""c""', "C": "x\'", "D": ""}
    message = refused(tmp_path, "[process:web]\ncmd = a\'\'\' \"\"\"\n")
    assert message == ":2: [process:web] cmd: a value cannot hold both \'\'\' and \"\"\"", message

def test_config_error_is_a_bad_request(tmp_path):
    with pytest.raises(BadRequest) as info:
        parse_config("[process:web]\ncmd = x\nnumprocesses = -1\n", "zsup.ini")
    assert info.value.code == "bad_request"
    assert str(info.value) == "zsup.ini: [process:web] numprocesses: must be >= 0, got '-1'"
    assert (info.value.section, info.value.key) == ("process:web", "numprocesses")


def test_unreadable_file_and_bad_override(tmp_path):
    missing = str(tmp_path / "missing.ini")
    with pytest.raises(ConfigError, match=r"missing\.ini: cannot read"):
        load_config(missing)
    with pytest.raises(ConfigError, match=r"log_format: expected text or json"):
        load_config(write(tmp_path, "[zsup]\n"), {"log_format": "xml"})
    with pytest.raises(ConfigError, match=r"nope: unknown setting"):
        load_config(write(tmp_path, "[zsup]\n"), {"nope": 1})


def test_plugin_sections_are_kept_for_plugins():
    cfg = parse_config("[plugin:dummy]\nanything = goes\n")
    assert cfg.raw["plugin:dummy"]["anything"] == "goes"


def test_example_config_loads_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(os.path.join(ETC, "zsup.ini"))
    assert cfg.http_endpoints == ["public"]
    assert cfg.endpoints["public"]["bind"] == "127.0.0.1:5000"
    jobs = {job.name: job for job in cfg.jobs}
    assert set(jobs) >= {"dummy", "echo"}
    for job in jobs.values():
        assert job.cwd == ETC
        assert os.access(os.path.join(job.cwd, job.cmd), os.X_OK)
    assert jobs["echo"].redirect_input is True


def run_example(name, **kw):
    return subprocess.Popen([os.path.join(ETC, name)], cwd=ETC, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def test_example_dummy_greets_and_stops_cleanly_on_sigterm():
    proc = run_example("dummy.py")
    try:
        first = readline_within(proc.stdout, message="dummy.py's greeting").decode()
        assert first == f"hello, dummy (pid: {proc.pid}) is alive\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_example_echo_echoes_lines():
    proc = run_example("echo.py", stdin=subprocess.PIPE)
    try:
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        assert readline_within(proc.stdout, message="the echo") == b"hello\n"  # flushed at once, not at exit
        proc.stdin.write(b"second line\n")
        proc.stdin.close()
        assert proc.stdout.read() == b"second line\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
