"""The protocol's declaration (zsup/bus/schema.py) and what is made from it: dispatch's checks,
the typed client methods, docs/bus.md's command table and the bus part of /openapi.json."""

import inspect
import os

import pytest
from conftest import ROOT, wait_for

from zsup.bus import docgen, schema
from zsup.bus.client import Client
from zsup.bus.parse import parse_scale, scale_order
from zsup.daemon import agent_commands, commands, key_commands, socket_commands, task_commands
from zsup.errors import BadRequest, NotFound

SLEEP = "[process:web]\ncmd = sleep 300\nnumprocesses = 1\n"


def test_docs_bus_md_matches_the_declaration():
    path = os.path.join(ROOT, "docs", "bus.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert docgen.render(text) == text, "docs/bus.md drifted: run python -m zsup.bus.docgen"
    for name in schema.COMMANDS:
        assert f"| `{name}`" in text


def test_the_drift_check_fails_on_a_stale_table(tmp_path):
    stale = tmp_path / "bus.md"
    with open(os.path.join(ROOT, "docs", "bus.md"), encoding="utf-8") as f:
        stale.write_text(f.read().replace("| `ping` | |", "| `ping` | `[loud]` |"))
    assert docgen.main(["--check", "--doc", str(stale)]) == 1
    assert docgen.main(["--doc", str(stale)]) == 0  # rewritten
    assert docgen.main(["--check", "--doc", str(stale)]) == 0


def test_every_handler_is_declared_and_every_declaration_handled():
    dispatch = commands.Dispatcher(commands.HANDLERS, task_commands.HANDLERS, agent_commands.HANDLERS,
                                   key_commands.HANDLERS, socket_commands.HANDLERS)
    assert dispatch.names() == sorted(schema.COMMANDS)


def test_a_handler_that_disagrees_with_its_declaration_is_refused():
    def scale(d, name, session=None):  # `n` is missing
        return None

    with pytest.raises(ValueError, match="'scale'"):
        commands.Dispatcher({"scale": scale})

    def frobnicate(d):
        return None

    with pytest.raises(ValueError, match="no declaration"):
        commands.Dispatcher({"frobnicate": frobnicate})


@pytest.mark.parametrize("cmd, args, message", [
    ("scale", {"name": 3, "n": 1}, "name: expected a job name, got 3"),
    ("scale", {"name": "web", "n": [1]}, "n: expected an integer or a string"),
    ("scale", {"name": "web", "n": True}, "n: expected an integer or a string, got True"),
    ("load", {"config": ["x"]}, "config: expected a JSON object"),
    ("load", {"config": {"name": "x", "cmd": "true"}, "start": "yes"}, "start: expected true or false"),
    ("load_session", {"session": "app", "configs": {}}, "configs: expected a non-empty list of jobs"),
    ("send", {"pid": 1, "data": 5}, "data: expected a string"),
    ("read_output", {"pid": 1, "since": "0"}, "since: expected an integer"),
    ("jobs", {"session": 7}, "session: expected a string"),
    ("scale", {"n": 2}, "scale: missing argument 'name'"),
    ("jobs", {"bogus": 1}, "jobs: unknown argument 'bogus'"),
    ("explode", {}, "unknown command 'explode'"),
])
def test_check_request_words(cmd, args, message):
    with pytest.raises(BadRequest) as info:
        schema.check_request(cmd, args)
    assert message in info.value.message


def test_null_is_leaving_an_optional_argument_out():
    schema.check_request("jobs", {"session": None})
    schema.check_request("kill", {"pid": 3, "sig": None})
    with pytest.raises(BadRequest, match="name: expected a job name, got None"):
        schema.check_request("info", {"name": None})


def test_zsupd_checks_types_from_the_declaration_and_changes_nothing(zsupd_factory):
    d = zsupd_factory(SLEEP)
    with d.client() as c:
        wait_for(lambda: c.call("status")[0]["running"] == 1)
        with pytest.raises(BadRequest, match="name: expected a job name"):
            c.call("scale", name=["web"], n=1)
        with pytest.raises(BadRequest, match="n: expected an integer or a string"):
            c.call("scale", name="web", n=2.5)
        with pytest.raises(BadRequest, match="config: expected a JSON object"):
            c.call("load", config="web")
        with pytest.raises(BadRequest, match="start: expected true or false"):
            c.call("load", config={"name": "x", "cmd": "true"}, start="no")
        assert c.call("jobs") == ["default.web"]
        assert c.call("info", name="web")["numprocesses"] == 1
        assert c.call("jobs", session=None) == ["default.web"]  # null: as if left out


def test_typed_methods_follow_the_declaration():
    for name, spec in schema.COMMANDS.items():
        method = getattr(Client, name)
        params = list(inspect.signature(method).parameters.values())[1:]
        assert [p.name for p in params] == [p.name for p in spec.params if p.required] + \
            [p.name for p in spec.params if not p.required], name
        for p in params:
            required = spec.param_map[p.name].required
            assert (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD) == required, (name, p.name)
        assert spec.doc in method.__doc__


def test_typed_methods_check_before_sending(tmp_path):
    # Nothing listens at this endpoint: a request sent would time out (Unavailable); the
    # declaration's check answers first.
    with Client(f"ipc://{tmp_path}/nobody.sock", timeout=0.2) as c:
        with pytest.raises(BadRequest, match="n: expected an integer or a string"):
            c.scale("web", [3])
        with pytest.raises(TypeError):
            c.scale("web")  # n is required
        with pytest.raises(TypeError):
            c.jobs("default")  # optional arguments are keyword-only


def test_typed_methods_against_zsupd(zsupd_factory):
    d = zsupd_factory(SLEEP)
    with d.client() as c:
        assert c.ping() == "pong"
        assert c.version()["protocol"] == 1
        assert c.scale("web", "=2") == {"job": "default.web", "numprocesses": 2}
        assert c.scale(name="web", n=-1, session="default")["numprocesses"] == 1
        with pytest.raises(NotFound):
            c.info("nope")
        assert sorted(c.commands()) == sorted(schema.COMMANDS)


def test_persisted_changes_survive_a_restart(zsupd_factory, tmp_path):
    """Each change is recorded from the state read in its own supervised call."""
    d = zsupd_factory(SLEEP)
    with d.client() as c:
        c.scale("web", "=3")
        c.load({"name": "extra", "cmd": "sleep", "args": ["300"]}, start=False)
        c.load_session("app", [{"name": "w", "cmd": "sleep 300"}])
        c.load_session("app", [{"name": "v", "cmd": "sleep 300"}], replace=True)
    assert d.stop() == 0
    d2 = zsupd_factory(open(d.config_path).read(), path=tmp_path)
    with d2.client() as c:
        wait_for(lambda: c.info("web")["running"] == 3)
        assert c.info("extra")["active"] is False
        assert c.jobs(session="app") == ["app.v"]
    assert d2.stop() == 0


def test_openapi_bus_part():
    from zsup.http.routes_api import api
    from zsup.http.routing import openapi_document

    doc = docgen.add_bus_openapi(openapi_document(api.routes, "t", "0"))
    schemas = doc["components"]["schemas"]
    assert set(n for n in schemas if n.startswith("bus.")) == {f"bus.{n}" for n in schema.COMMANDS}
    scale = schemas["bus.scale"]
    assert scale["required"] == ["name", "n"] and scale["x-persists"] is True
    assert scale["properties"]["n"]["oneOf"] == [{"type": "integer"}, {"type": "string"}]
    param = doc["paths"]["/bus/{cmd}"]["post"]["parameters"][0]
    assert param["schema"]["enum"] == list(schema.COMMANDS)


def test_scale_parsers():
    assert [scale_order(t) for t in ("3", " +2", "-1", "=3", "x", "")] == ["=3", "+2", "-1", "=3", None, None]
    assert parse_scale(2, "+2") == 4 and parse_scale(2, -5) == 0 and parse_scale(2, "=7") == 7
    with pytest.raises(BadRequest):
        parse_scale(1, True)
