"""One vocabulary across zsupd, zsupctl, zsup, zsup-http and zsup-lookupd (issue 19): each
tool's --help (run as a command) and each subcommand's help are compared."""

import argparse
import os
import re
import subprocess

import pytest
from conftest import PYTHON, ROOT

from zsup.cli import http_gateway, lookupd, procfile_tool, zsupd
from zsup.cli.zsupctl import parser as zsupctl

TOOLS = {
    "zsupd": ("zsup.cli.zsupd", zsupd.build_parser),
    "zsupctl": ("zsup.cli.zsupctl", zsupctl.build_parser),
    "zsup": ("zsup.cli.procfile_tool", procfile_tool.build_parser),
    "zsup-http": ("zsup.cli.http_gateway", http_gateway.build_parser),
    "zsup-lookupd": ("zsup.cli.lookupd", lookupd.build_parser),
}
GLOBALS = {
    "zsupctl": ["--bus", "--pub", "--state-dir", "--json", "--timeout", "--curve-key", "--server-key"],
    "zsup": ["--procfile", "--directory", "--env", "--endpoint", "--curve-key", "--server-key"],
}


def run(module, *args):
    return subprocess.run([PYTHON, "-m", module, *args], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=ROOT, COLUMNS="100"))


def subcommands(parser):
    """(name, subparser) of every subcommand, each once (aliases share a parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield name, sub


@pytest.fixture(scope="module")
def helps():
    """tool -> {"": its --help as the command prints it, subcommand: that subcommand's help}."""
    out = {}
    for tool, (module, build) in TOOLS.items():
        proc = run(module, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {tool}"), proc.stderr
        out[tool] = {"": proc.stdout}
        for name, sub in subcommands(build()):
            out[tool][name] = sub.format_help()
    return out


def visible_options(parser):
    """(what it sets, long option strings) of every option shown in the parser's help; what it
    sets is the dest and, for options that set a constant (-q), that constant."""
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            yield (action.dest, repr(action.const)), tuple(o for o in action.option_strings if o.startswith("--"))


def test_one_spelling_per_option_across_tools():
    spellings, by_dest = {}, {}
    for tool, (_, build) in TOOLS.items():
        parser = build()
        for _, p in [(tool, parser), *subcommands(parser)]:
            for dest, longs in visible_options(p):
                by_dest.setdefault(dest, set()).add(longs)
                for option in longs:
                    # --plugins-dir and --plugin-dir, --tokenfile and --tokens-file: one thing, two spellings
                    key = re.sub(r"s\b", "", option.strip("-")).replace("-", "")
                    spellings.setdefault(key, set()).add(option)
    assert {dest: s for dest, s in by_dest.items() if len(s) > 1} == {}
    assert {key: s for key, s in spellings.items() if len(s) > 1} == {}
    # the gafferd spelling still works, out of sight
    args = zsupd.build_parser().parse_args(["--plugins-dir", "/x"])
    assert args.plugin_dir == "/x" and "--plugins-dir" not in zsupd.build_parser().format_help()


def test_one_help_style(helps):
    for tool, texts in helps.items():
        for sub, text in texts.items():
            where = f"{tool} {sub}".strip()
            assert "SSL" not in text, where
            assert not re.search(r"\[default|\(default(?!:\s)|default is", text), (where, text)


def test_global_options_are_shown_once(helps):
    for tool, options in GLOBALS.items():
        assert all(o in helps[tool][""] for o in options)
        for sub, text in helps[tool].items():
            if sub:  # the subcommand's usage and options, before the epilog that names the globals
                body = text.split("Global options that apply")[0].split("The global options")[0]
                assert [o for o in options if re.search(rf"{o}\b", body)] == [], (tool, sub, body)
    # shown once, but accepted on both sides of the subcommand
    args = zsupctl.build_parser().parse_args(["status", "--json", "--timeout", "2"])
    assert args.json is True and args.timeout == 2.0
    assert "--attach" in helps["zsup"]["start"] and "--endpoint" not in helps["zsup"]["run"]


def test_the_servers_share_their_common_options(helps):
    for tool in ("zsupd", "zsup-http", "zsup-lookupd"):
        text = helps[tool][""]
        for option in ("-v, --verbose", "-q, --quiet", "--bind ADDRESS", "--certfile FILE", "--keyfile FILE",
                       "--backlog N"):
            assert option in text, (tool, option)


@pytest.mark.parametrize("value,words", [("99999", "port 99999 is out of range"),
                                         ("abc", "port 'abc' is not a number")])
def test_a_bad_port_is_worded_the_same_by_every_tool(tmp_path, value, words):
    runs = {
        "zsupd": run("zsup.cli.zsupd", "--state-dir", str(tmp_path), "--bind", f"127.0.0.1:{value}"),
        "zsup-http": run("zsup.cli.http_gateway", "--state-dir", str(tmp_path), "--bind", f"127.0.0.1:{value}"),
        "zsup-lookupd": run("zsup.cli.lookupd", "--bind", f"127.0.0.1:{value}"),
        "zsup": run("zsup.cli.procfile_tool", "check", "-p", value),
    }
    for tool, proc in runs.items():
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (tool, proc.stderr)
        assert lines[0].startswith(f"{tool}: error: ") and words in lines[0], (tool, lines)
    assert not os.path.exists(tmp_path / "zsupd.sock")  # zsupd refused it before starting anything
