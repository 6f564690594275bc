"""gaffer's API keys and users: the store (hashed at rest), gaffer's permission rules, and
X-Api-Key on zsup's own routes and websockets with `require_key = true` (real zsupd, real HTTP;
gaffer's own client is in test_gaffer_client.py)."""

import base64
import json
import subprocess
import sys

import pytest
from conftest import ROOT, close_ws_clients
from test_http_support import GW, echo_job, start_gateway
from ws4py.client.threadedclient import WebSocketClient
from ws4py.exc import HandshakeError

from zsup.daemon.gaffer_keys import GafferKeys
from zsup.daemon.store import Store
from zsup.errors import BadRequest, Conflict, NotFound
from zsup.http.gaffer_keys_api import Permissions


@pytest.fixture
def keys(tmp_path):
    store = Store(str(tmp_path / "zsupd.db"))
    try:
        yield GafferKeys(store)
    finally:
        store.close()


def test_keys_and_passwords_are_hashed_at_rest(keys, tmp_path):
    key = keys.create_key({"manage": ["app"]}, label="x")
    keys.create_user("ann", "correct horse", user_type=1, key=key)
    login = keys.authenticate("ann", "correct horse")
    raw = (tmp_path / "zsupd.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("zsupd.db-*"))
    for secret in (key, login, "correct horse"):
        assert secret.encode() not in raw
    assert keys.permissions(login) == {"manage": ["app"]}
    with pytest.raises(NotFound):
        keys.authenticate("ann", "wrong")
    with pytest.raises(NotFound):
        keys.authenticate("nobody", "x")
    with pytest.raises(Conflict):
        keys.create_user("ann", "x")
    keys.delete_key(key)  # its children (the login) go too
    with pytest.raises(NotFound):
        keys.permissions(login)


@pytest.mark.parametrize("perms", [["admin"], {"admin": "yes"}, {"manage": "app"},
                                   {"manage": [1]}, {"root": True}])
def test_bad_permissions_are_refused(keys, perms):
    with pytest.raises(BadRequest):
        keys.create_key(perms)
    assert keys.list_keys() == []


def test_gaffer_permission_rules():
    p = Permissions({"manage": ["app"], "write": ["web.front"], "read": ["*"]})
    assert p.can("manage", "app") and p.can("manage", "app.web") and p.can("write", "app.x")
    assert not p.can("manage", "web.front") and p.can("write", "web.front")
    assert not p.can("write", "web.back") and p.can("read", "web.back")
    assert not p.can("manage", "*") and not p.is_admin() and not p.flag("create_key")
    assert Permissions({"admin": True}).can("manage", "*")
    assert Permissions(None).can("manage", "anything")


class WS(WebSocketClient):
    def received_message(self, message):
        pass


@pytest.fixture
def keyed(zsupd_factory, tmp_path):
    daemon = zsupd_factory("[zsup]\nrequire_key = true\n", start=False)
    subprocess.run([sys.executable, "-m", "zsup.cli.zsupd", "--state-dir", daemon.state_dir,
                    "-c", daemon.config_path, "--create-admin-user", "--username", "root",
                    "--password", "pw"], check=True, timeout=30, cwd=ROOT)
    daemon.start()
    gateway = start_gateway(daemon, tmp_path, timeout=3.0)
    try:
        yield GW(daemon, gateway, tmp_path)
    finally:
        gateway.stop()


def test_zsup_routes_and_websockets_need_a_key(keyed):
    gw = keyed
    basic = "Basic " + base64.b64encode(b"root:pw").decode()
    admin = gw.get("/auth", headers={"Authorization": basic}).json["api_key"]
    assert gw.get("/auth", headers={"Authorization": "Basic !!"}).status == 401
    assert gw.get("/ping").status == 200  # open, as in gaffer
    assert gw.get("/jobs").status == 401
    assert gw.get("/jobs", headers={"X-Api-Key": "nope"}).status == 401
    h = {"X-Api-Key": admin}
    assert gw.post("/jobs/default", echo_job(), headers=h).status == 201
    a = gw.post("/keys", {"permissions": {"read": ["default"]}}, headers=h)
    assert a.status == 201
    reader = {"X-Api-Key": a.json["api_key"]}
    pid = gw.get("/jobs/default/echo/pids", headers=reader).json["pids"][0]
    assert gw.post(f"/streams/{pid}/stdin", b"x\n", headers=reader).status == 403
    assert gw.post(f"/streams/{pid}/stdin", b"x\n", headers=h).status == 200
    assert gw.get(f"/streams/{pid}/stdout", headers=reader).status == 200
    assert gw.post("/bus/ping", headers=reader).status == 403
    assert gw.post("/bus/ping", headers=h).json == {"result": "pong"}
    assert gw.get("/tasks", headers=reader).status == 403  # mounted apps: admin keys only
    assert gw.post("/keys", {"permissions": {"admin": True}}, headers=reader).status == 403
    assert json.loads(gw.get("/users", headers=h).body)["users"][0]["username"] == "root"

    url = f"ws://{gw.host}:{gw.port}/channel"
    with pytest.raises(HandshakeError):
        WS(url).connect()
    ws = WS(url, headers=[("X-Api-Key", admin)])
    ws.connect()
    close_ws_clients([ws])
