"""The `.env` and Procfile cases of honcho 2.0.0's test suite, run against zsup's parsers.

Written from reading honcho's tests/test_environ.py (not copied): each case is the input
honcho is tested with and the result honcho expects, except where docs/procfile.md lists a
deliberate difference; those cases assert zsup's documented result and say so.
"""

import pytest

from zsup.core.envfile import parse_env
from zsup.services.procfile import Procfile, base_port, parse_procfile

HONCHO_ENV_CASES = [
    ("FOO=bar\n", {"FOO": "bar"}),
    ("FOO=bar\nBAZ=qux\n", {"FOO": "bar", "BAZ": "qux"}),
    ("FOO=bar", {"FOO": "bar"}),  # no newline at the end
    ("#commented: command\n", {}),
    ("-foo=command\n", {}),  # skipped (with a warning)
    ("MYVAR='hello\"world'\n", {"MYVAR": 'hello"world'}),
    ("MYVAR=\"hello'world\"\n", {"MYVAR": "hello'world"}),
    ("MYVAR='\"surrounded\"'\n", {"MYVAR": '"surrounded"'}),
    ('MYVAR=\\"escaped\\"\n', {"MYVAR": '"escaped"'}),
    ("MYVAR=user@domain.com\n", {"MYVAR": "user@domain.com"}),
    ("MYVAR=~pun|u@|0n$=\n", {"MYVAR": "~pun|u@|0n$="}),
    ("MYVAR=⋃ñᴉ—☪ó∂ǝ\n", {"MYVAR": "⋃ñᴉ—☪ó∂ǝ"}),  # noqa: RUF001
    ("ṀẎṾẠṚ=value\n", {}),  # skipped (with a warning)
    ("MYVAR='sp ace'\n", {"MYVAR": "sp ace"}),
    ("DOLLAR='foo\\$bar'\n", {"DOLLAR": "foo\\$bar"}),
]


@pytest.mark.parametrize("text, expected", HONCHO_ENV_CASES)
def test_honcho_env_cases(text, expected):
    warnings: list[str] = []
    assert parse_env(text, ".env", warn=warnings.append) == expected
    assert len(warnings) == (1 if not expected and not text.startswith("#") else 0)


def test_honcho_escapes_in_single_quotes_are_a_documented_difference():
    # honcho turns \t and \n into a tab and a newline even inside single quotes; zsup keeps
    # single quotes literal, as sh, python-dotenv and docker compose do (docs/procfile.md).
    text = "TABS='foo\\tbar'\nNEWLINES='foo\\nbar'\n"
    assert parse_env(text) == {"TABS": "foo\\tbar", "NEWLINES": "foo\\nbar"}
    # Double quotes decode them, as python-dotenv does.
    assert parse_env('TABS="foo\\tbar"\nNEWLINES="foo\\nbar"\n') == {"TABS": "foo\tbar", "NEWLINES": "foo\nbar"}


def test_export_prefix_is_kept_a_documented_difference():
    # honcho's shell lexer skips `export X=1`; foreman, python-dotenv and zsup keep it.
    assert parse_env("export X=1\n") == {"X": "1"}


HONCHO_PROCFILE_CASES = [
    ("web: command\n", {"web": "command"}),
    ("foo: python foo.py\nbar: python bar.py\n", {"foo": "python foo.py", "bar": "python bar.py"}),
    ("web: command", {"web": "command"}),
    ("#commented: command\n", {}),
    ("+foo: command\n", {}),
    ('web: sh -c "echo $FOOBAR" >/dev/null 2>&1\n', {"web": 'sh -c "echo $FOOBAR" >/dev/null 2>&1'}),
]


@pytest.mark.parametrize("text, expected", HONCHO_PROCFILE_CASES)
def test_honcho_procfile_cases(text, expected):
    assert parse_procfile(text) == expected


def test_honcho_procfile_order():
    text = "one: onecommand\ntwo: twocommand\nthree: twocommand\nfour: fourcommand\n"
    assert list(parse_procfile(text)) == ["one", "two", "three", "four"]


def test_leading_dash_type_is_refused_a_documented_difference():
    # honcho runs `-foo_bar`; a zsup job name cannot start with '-', so zsup refuses the
    # file rather than silently not running that type.
    with pytest.raises(Exception, match="invalid process type '-foo_bar'"):
        parse_procfile("-foo_bar: command\n")


def test_duplicate_types_are_refused():
    with pytest.raises(Exception, match="duplicate process type 'foo'"):
        parse_procfile("foo: echo 123\nfoo: echo 123\n")


def ports_and_names(tmp_path, processes, concurrency=None, port=None, env=None):
    """honcho's expand_processes, the zsup way: {instance name: PORT} for the jobs zsup
    would run, by running each job's instance prefix in a real shell."""
    import subprocess

    (tmp_path / "Procfile").write_text("".join(f"{n}: {c}\n" for n, c in processes))
    proc = Procfile.load(str(tmp_path / "Procfile"))
    proc.env.update(env or {})
    out = {}
    for job in proc.job_dicts(concurrency, port=base_port(port, proc.env, {})):
        for instance in range(1, job["numprocesses"] + 1):
            line = job["cmd"].replace(proc.processes[job["name"]], 'echo "$PS $PORT"')
            got = subprocess.run(["/bin/sh", "-c", line], env={"ZSUP_INSTANCE": str(instance)},
                                 capture_output=True, text=True, check=True).stdout.split()
            out[got[0]] = got[1]
    return out


def test_honcho_port_cases(tmp_path):
    two = [("foo", "some command"), ("bar", "another command")]
    assert ports_and_names(tmp_path, two[:1], port=8000) == {"foo.1": "8000"}
    assert ports_and_names(tmp_path, two, port=8000) == {"foo.1": "8000", "bar.1": "8100"}
    assert ports_and_names(tmp_path, two, env={"PORT": "8000"}) == {"foo.1": "8000", "bar.1": "8100"}
    assert ports_and_names(tmp_path, two, concurrency={"foo": 3, "bar": 2}, port=4000) == {
        "foo.1": "4000", "foo.2": "4001", "foo.3": "4002", "bar.1": "4100", "bar.2": "4101"}
    # No port anywhere: foreman's and honcho's command-line default, 5000.
    assert ports_and_names(tmp_path, two) == {"foo.1": "5000", "bar.1": "5100"}


def test_port_option_wins_over_env_a_documented_difference(tmp_path):
    # honcho lets PORT in .env override --port; in zsup the explicit option wins.
    assert ports_and_names(tmp_path, [("foo", "x")], env={"PORT": "5000"}, port=8000) == {"foo.1": "8000"}


def test_unquoted_backslashes_other_than_escapes_are_kept_a_documented_difference():
    # honcho's shell lexer drops them (C:path); zsup keeps a Windows-style path as written.
    assert parse_env("P=C:\\path\\x\nQ=a\\\\b\n") == {"P": "C:\\path\\x", "Q": "a\\b"}


def test_unreadable_lines_warn_and_the_rest_is_read():
    warnings: list[str] = []
    env = parse_env("A=1\nA B\nC='open\nD=4\n", "app/.env", warn=warnings.append)
    assert env == {"A": "1", "D": "4"}
    assert warnings == ["app/.env:2: expected KEY=value, got 'A B'; line skipped",
                        "app/.env:3: unterminated single-quoted value for C; line skipped"]
