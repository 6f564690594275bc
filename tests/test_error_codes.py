"""One error code per condition across the bus, the HTTP gateway (and its mounted APIs) and
zsup-lookupd (issue 19): only the bus's codes, the HTTP status telling the finer case."""

import json
import os
import re
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from conftest import PYTHON, ROOT, readline_within

from zsup.bus.protocol import ERROR_CODES
from zsup.http import subapp, web, wshandoff

TOKEN = "tok-19"
ZSUP = os.path.join(ROOT, "zsup")


def test_every_code_in_the_sources_is_a_bus_code():
    assert set(web.CODE_BY_STATUS.values()) <= set(ERROR_CODES)
    assert set(web.STATUS_BY_CODE) == set(subapp.HTTP_STATUS) == set(ERROR_CODES)
    assert set(wshandoff._ERROR_CODES.values()) <= set(ERROR_CODES)
    found = set()
    for folder in ("http", "lookup", "daemon", "services"):
        for name in os.listdir(os.path.join(ZSUP, folder)):
            if name.endswith(".py"):
                with open(os.path.join(ZSUP, folder, name)) as f:
                    text = f.read()
                found |= set(re.findall(r'(?:RegistryError|HTTPError)\(\d+, "([a-z_]+)"', text))
                found |= set(re.findall(r'(?:HTTPError)\(\d+, [^()]*?, "([a-z_]+)"', text))
                found |= set(re.findall(r'^\s+code = "([a-z_]+)"', text, re.M))
    assert found and found <= set(ERROR_CODES), found - set(ERROR_CODES)


def ask(method, url, body=None, token=TOKEN):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve(module, env, *args):
    """A real server whose "listening on" line (INFO, shown by default) gives its port."""
    proc = subprocess.Popen([PYTHON, "-m", module, "--bind", "127.0.0.1:0", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT, **env))
    line = readline_within(proc.stderr, timeout=20, message=f"{module}'s 'listening on' line").decode()
    assert " INFO " in line, line
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    port = re.search(r"127\.0\.0\.1:(\d+)", line).group(1)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def servers(zsupd_factory, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    tokens.chmod(0o600)
    d = zsupd_factory("")
    procs = []
    try:
        gateway, gateway_url = serve("zsup.cli.http_gateway", {"ZSUP_BUS": d.bus, "ZSUP_PUB": d.pub},
                                     "--tokens-file", str(tokens))
        procs.append(gateway)
        lookupd, lookupd_url = serve("zsup.cli.lookupd", {}, "--tokens-file", str(tokens), "--protect-reads")
        procs.append(lookupd)
        yield d, gateway_url, lookupd_url
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)


def test_the_same_condition_gets_the_same_code(servers):
    d, gateway, lookupd = servers
    big = b"{" + b" " * (2 << 20) + b"}"
    conditions = {  # condition: (gateway request, lookupd request)
        401: (("GET", gateway + "/jobs", None, "wrong"), ("GET", lookupd + "/nodes", None, "wrong")),
        404: (("GET", gateway + "/nowhere", None, TOKEN), ("GET", lookupd + "/nowhere", None, TOKEN)),
        405: (("DELETE", gateway + "/tasks/1/state", None, TOKEN), ("DELETE", lookupd + "/jobs", None, TOKEN)),
        413: (("POST", gateway + "/jobs/default", big, TOKEN), ("POST", lookupd + "/nodes", big, TOKEN)),
    }
    for status, requests in conditions.items():
        answers = [ask(*request) for request in requests]
        assert [a[0] for a in answers] == [status, status], (status, answers)
        codes = {a[1]["error"]["code"] for a in answers}
        assert codes == {web.CODE_BY_STATUS[status]}, (status, answers)
    # and the bus says `forbidden` where HTTP says 403 (zsupd's own jobs), `not_found` for 404
    with d.client() as c:
        with pytest.raises(Exception) as info:
            c.call("info", name="nowhere")
    assert info.value.code == "not_found"
