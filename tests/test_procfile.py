"""Procfile parsing, concurrency and export (zsup/procfile.py)."""

import json
import os

import pytest
from configobj import ConfigObj

from zsup.core.jobspec import JobSpec
from zsup.errors import BadRequest
from zsup.services.procfile import (
    Procfile,
    app_name_for,
    ini_value,
    instance_prefix,
    parse_concurrency,
    strip_instance_prefix,
)

PROCFILE = """\
# the web front
web: python -u app.py --port $PORT

worker:   python -u worker.py
  clock-1 : sh -c 'date; sleep 60'   # the shell sees this comment
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture
def app_dir(tmp_path):
    root = tmp_path / "myapp"
    write(root / "Procfile", PROCFILE)
    return root


def load(app_root, **kwargs):
    return Procfile.load(str(app_root / "Procfile"), **kwargs)


def test_load_reads_types_in_order_with_defaults(app_dir):
    proc = load(app_dir)
    assert proc.path == str(app_dir / "Procfile")
    assert proc.root == str(app_dir)
    assert proc.app == "myapp"
    assert proc.env == {}
    assert list(proc.processes.items()) == [
        ("web", "python -u app.py --port $PORT"),
        ("worker", "python -u worker.py"),
        ("clock-1", "sh -c 'date; sleep 60'   # the shell sees this comment"),
    ]


def test_relative_procfile_path_gives_absolute_path_and_root(app_dir, monkeypatch):
    monkeypatch.chdir(app_dir)
    proc = Procfile.load("Procfile")
    assert proc.path == str(app_dir / "Procfile")
    assert proc.root == str(app_dir)
    assert proc.app == "myapp"


def test_crlf_bom_and_colons_in_the_command(tmp_path):
    path = write(tmp_path / "Procfile", '\ufeffweb: echo "a:b"\r\n\r\nrun:printf x:y\r\n')
    assert Procfile.load(path).processes == {"web": 'echo "a:b"', "run": "printf x:y"}


def test_default_env_file_is_read_from_the_root(app_dir):
    write(app_dir / ".env", "PORT=5000\nexport NAME='my app'\n")
    assert load(app_dir).env == {"PORT": "5000", "NAME": "my app"}


def test_given_env_files_replace_the_default_and_later_ones_win(app_dir, tmp_path):
    write(app_dir / ".env", "DEFAULT=yes\n")
    first = write(tmp_path / "a.env", "A=1\nB=1\n")
    second = write(tmp_path / "b.env", "B=2\n")
    assert load(app_dir, env_files=[first, second]).env == {"A": "1", "B": "2"}


def test_a_missing_given_env_file_is_an_error(app_dir, tmp_path):
    missing = str(tmp_path / "nope.env")
    with pytest.raises(BadRequest) as info:
        load(app_dir, env_files=[missing])
    assert info.value.message == f"{missing}: no such env file"


def test_a_bad_default_env_file_names_its_line(app_dir):
    write(app_dir / ".env", "A=1\nnot a line\n")
    with pytest.raises(BadRequest) as info:
        load(app_dir)
    assert info.value.message.startswith(f"{app_dir / '.env'}:2: expected KEY=value")


def test_root_option_moves_cwd_default_env_and_app_name(app_dir, tmp_path):
    other = tmp_path / "other-root"
    write(other / ".env", "WHERE=other\n")
    proc = load(app_dir, root=str(other))
    assert proc.root == str(other)
    assert proc.app == "other-root"
    assert proc.env == {"WHERE": "other"}
    assert {job["cwd"] for job in proc.job_dicts()} == {str(other)}


def test_a_missing_root_is_an_error(app_dir, tmp_path):
    with pytest.raises(BadRequest, match="no such application root directory"):
        load(app_dir, root=str(tmp_path / "missing"))


def test_app_name_option_wins_and_is_made_valid(app_dir):
    assert load(app_dir, app_name="shop").app == "shop"
    assert load(app_dir, app_name="my shop.v2").app == "my_shop_v2"


@pytest.mark.parametrize(
    "folder, app",
    [
        ("my.app", "my_app"),
        ("web app", "web_app"),
        ("-dash", "_dash"),
        ("ok-name_1", "ok-name_1"),
        ("café", "caf_"),
        ("", "app"),
    ],
)
def test_app_names_from_folders(folder, app):
    assert app_name_for(folder) == app


def test_folder_name_with_odd_characters_becomes_a_valid_session(tmp_path):
    root = tmp_path / "my app.v2"
    write(root / "Procfile", "web: true\n")
    proc = load(root)
    assert proc.app == "my_app_v2"
    assert JobSpec.from_dict(proc.job_dicts()[0]).fullname == "my_app_v2.web"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("-web: cmd", "invalid process type '-web'"),
        ("web: again", "duplicate process type 'web'"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, line, reason):
    path = write(tmp_path / "Procfile", f"# comment\nweb: run\n\n{line}\n")
    with pytest.raises(BadRequest) as info:
        Procfile.load(path)
    assert info.value.message.startswith(f"{path}:4: {reason}")
    assert info.value.code == "bad_request"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("just some text", "not 'name: command'"),
        ("two words: cmd", "not 'name: command'"),
        (": cmd", "not 'name: command'"),
        ("we.b: cmd", "not 'name: command'"),
        ("+web: cmd", "not 'name: command'"),
        ("wéb: cmd", "not 'name: command'"),
        ("empty:", "no command"),
        ("empty:    ", "no command"),
    ],
)
def test_lines_honcho_skips_are_skipped_with_a_warning(tmp_path, line, reason):
    path = write(tmp_path / "Procfile", f"# comment\nweb: run\n\n{line}\n")
    warnings: list[str] = []
    assert Procfile.load(path, warn=warnings.append).processes == {"web": "run"}
    assert warnings == [f"{path}:4: {reason}, line skipped: {line.strip()!r}"]
    assert Procfile.load(path).processes == {"web": "run"}  # no warn: skipped quietly


def test_a_procfile_of_only_comments_is_an_empty_app(tmp_path):
    path = write(tmp_path / "Procfile", "# nothing here\n\n")
    proc = Procfile.load(path)
    assert proc.processes == {} and proc.job_dicts() == []


def test_a_missing_procfile_is_an_error(tmp_path):
    path = str(tmp_path / "Procfile")
    with pytest.raises(BadRequest) as info:
        Procfile.load(path)
    assert info.value.message == f"{path}: no such Procfile"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("web=2,worker=1", {"web": 2, "worker": 1}),
        (" web = 2 , worker=0 ", {"web": 2, "worker": 0}),
        ("clock-1=3,", {"clock-1": 3}),
        ("", {}),
    ],
)
def test_parse_concurrency(value, expected):
    assert parse_concurrency(value) == expected


@pytest.mark.parametrize(
    "value, bad, reason",
    [
        ("web", "web", "expected process=number"),
        ("web=2,worker", "worker", "expected process=number"),
        ("=2", "=2", "expected process=number"),
        ("we.b=2", "we.b=2", "expected process=number"),
        ("web=", "web=", "'' is not a whole number"),
        ("web=two", "web=two", "'two' is not a whole number"),
        ("web=1.5", "web=1.5", "'1.5' is not a whole number"),
        ("web=1,worker=-1", "worker=-1", "the number must be >= 0"),
        ("web=1,web=2", "web=2", "'web' is given twice"),
    ],
)
def test_bad_concurrency_names_the_bad_part(value, bad, reason):
    with pytest.raises(BadRequest) as info:
        parse_concurrency(value)
    assert info.value.message == f"concurrency: bad entry {bad!r} ({reason})"


def test_job_dicts_shape(app_dir):
    write(app_dir / ".env", "PORT=5000\n")
    jobs = load(app_dir).job_dicts()
    assert jobs[0] == {
        "name": "web",
        "session": "myapp",
        "cmd": instance_prefix("web", None) + "python -u app.py --port $PORT",
        "shell": True,
        "cwd": str(app_dir),
        "env": {"PORT": "5000"},
        "numprocesses": 1,
        "redirect_output": ["stdout", "stderr"],
    }
    assert [job["name"] for job in jobs] == ["web", "worker", "clock-1"]


def test_job_dicts_are_accepted_by_jobspec(app_dir):
    write(app_dir / ".env", "PORT=5000\n")
    proc_cmds = load(app_dir).processes
    for job in load(app_dir).job_dicts({"worker": 0}):
        spec = JobSpec.from_dict(job)
        assert spec.session == "myapp" and spec.shell and spec.cwd == str(app_dir)
        assert spec.cmd == job["cmd"] and spec.env == {"PORT": "5000"}
        assert strip_instance_prefix(spec.cmd) == proc_cmds[job["name"]]
        assert spec.numprocesses == (0 if job["name"] == "worker" else 1)


def test_job_dicts_do_not_share_mutable_state(app_dir):
    write(app_dir / ".env", "A=1\n")
    proc = load(app_dir)
    jobs = proc.job_dicts()
    jobs[0]["env"]["A"] = "changed"
    jobs[0]["redirect_output"].append("x")
    assert proc.env == {"A": "1"}
    assert jobs[1]["env"] == {"A": "1"} and jobs[1]["redirect_output"] == ["stdout", "stderr"]


def test_job_dicts_with_concurrency_and_names(app_dir):
    proc = load(app_dir)
    jobs = proc.job_dicts(concurrency={"web": 3, "clock-1": 0}, names=["clock-1", "web"])
    # Procfile order, not the order asked for, so that start order is stable.
    assert [(job["name"], job["numprocesses"]) for job in jobs] == [("web", 3), ("clock-1", 0)]
    assert [job["name"] for job in proc.job_dicts(names=[])] == ["web", "worker", "clock-1"]


def test_unknown_types_are_refused(app_dir):
    proc = load(app_dir)
    with pytest.raises(BadRequest) as info:
        proc.job_dicts(names=["web", "db"])
    assert info.value.message == "unknown process type 'db' (known: web, worker, clock-1)"
    with pytest.raises(BadRequest) as info:
        proc.job_dicts(concurrency={"web": 1, "db": 2})
    assert info.value.message == "unknown process type 'db' (known: web, worker, clock-1)"
    with pytest.raises(BadRequest, match="unknown process type 'db'"):
        proc.export_ini({"db": 1})
    with pytest.raises(BadRequest, match="unknown process type 'db'"):
        proc.export_json({"db": 1})


def test_export_json_is_the_job_list(app_dir):
    write(app_dir / ".env", "PORT=5000\n")
    proc = load(app_dir)
    text = proc.export_json({"worker": 2})
    assert text.startswith("[\n  {") and text.endswith("\n")
    assert json.loads(text) == proc.job_dicts({"worker": 2})
    assert [job["name"] for job in json.loads(proc.export_json(names=["worker"]))] == ["worker"]


def read_ini(text):
    """Read an export the way zsupd reads its config: configobj, lists on, no interpolation."""
    return ConfigObj(text.splitlines(), list_values=True, interpolation=False)


def test_export_ini_sections_and_keys(app_dir):
    write(app_dir / ".env", "PORT=5000\nlower_key=x\n")
    text = load(app_dir).export_ini({"web": 2}, names=["web", "worker"])
    config = read_ini(text)
    assert list(config) == [
        "process:myapp:web", "env:myapp:web",
        "process:myapp:worker", "env:myapp:worker",
    ]
    assert dict(config["process:myapp:web"]) == {
        "cmd": instance_prefix("web", None) + "python -u app.py --port $PORT",
        "cwd": str(app_dir),
        "shell": "true",
        "numprocesses": "2",
        "redirect_output": ["stdout", "stderr"],
    }
    assert config["process:myapp:worker"]["numprocesses"] == "1"
    # zsupd's reader would cut ' # ...' from a command: such a command is refused, not mangled
    with pytest.raises(BadRequest, match="myapp.clock-1: cannot write the command .* --format json"):
        load(app_dir).export_ini(names=["clock-1"])
    assert dict(config["env:myapp:worker"]) == {"PORT": "5000", "lower_key": "x"}
    assert f"[process:myapp:web]\ncmd = {instance_prefix('web', None)}python -u app.py --port $PORT\n" in text


def test_export_ini_without_env_has_no_env_sections(app_dir):
    config = read_ini(load(app_dir).export_ini(names=["web"]))
    assert list(config) == ["process:myapp:web"]


def test_export_ini_round_trips_awkward_values(tmp_path):
    root = tmp_path / "odd"
    write(root / "Procfile", """web: printf '%s, %s\\n' "a" 'b'\nlist: echo a,b\n""")
    write(root / ".env", """\
LIST=a,b
SPACES="  padded  "
HASH="x # y"
BOTH="it's \\"quoted\\""
LINES="one\\ntwo, 'three' \\"four\\""
EMPTY=
""")
    proc = load(root)
    text = proc.export_ini()
    config = read_ini(text)
    for job in proc.job_dicts():
        # commands are written as is: zsupd's reader keeps a command's quotes and commas
        assert f"[process:odd:{job['name']}]\ncmd = {job['cmd']}\n" in text
        assert dict(config[f"env:odd:{job['name']}"]) == proc.env
    assert proc.env["LINES"] == "one\ntwo, 'three' \"four\""


@pytest.mark.parametrize("value", ["plain", "", " edge", "a,b", "#", "'", '"', "'\"", "a\nb", 'x"""y', "x'''y", "\\"])
def test_ini_value_round_trips(value):
    assert read_ini(f"[s]\nk = {ini_value(value)}\nnext = 1\n")["s"] == {"k": value, "next": "1"}


@pytest.mark.parametrize("value", ["a\rb", "page\x0cbreak", "line\u2028sep", "both \"\"\" and '''"])
def test_ini_value_refuses_what_configobj_cannot_carry(value):
    with pytest.raises(BadRequest, match="export as JSON"):
        ini_value(value)


def test_export_ini_refuses_an_env_value_it_cannot_write(app_dir):
    write(app_dir / ".env", "BAD='has\x0cformfeed'\n")
    proc = load(app_dir)
    with pytest.raises(BadRequest, match="export as JSON"):
        proc.export_ini()
    assert json.loads(proc.export_json())[0]["env"] == {"BAD": "has\x0cformfeed"}


def test_commands_are_kept_for_the_shell_to_expand(app_dir):
    write(app_dir / ".env", "PORT=5000\n")
    proc = load(app_dir)
    assert proc.processes["web"].endswith("$PORT")
    assert os.path.basename(proc.job_dicts()[0]["cwd"]) == "myapp"
