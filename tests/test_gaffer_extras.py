"""Smaller items of the gaffer drop-in (issue 13), each against the real gateway app:
attach-console without an upgrade."""

import pytest
from test_agent import CONFIG, Files, make_tar, wait_state
from test_agent import http as call
from test_http_support import GW, start_gateway


@pytest.fixture
def agent_gw(zsupd_factory, tmp_path):
    daemon = zsupd_factory(CONFIG)
    www = tmp_path / "www"
    www.mkdir()
    files = Files(www)
    gateway = start_gateway(daemon, tmp_path, timeout=3.0)
    try:
        yield GW(daemon, gateway, tmp_path), files, www
    finally:
        gateway.stop()
        files.stop()


def test_attach_console_without_upgrade_is_426(agent_gw):
    gw, files, www = agent_gw
    make_tar(www / "app.tar.gz")
    code, process = call("POST", f"{gw.base}/agent/create-process",
                         {"app": "myapp", "source_url": f"{files.url}/app.tar.gz",
                          "process_type": "web", "node": "web.0"})
    assert code == 201, process
    wait_state(None, process, ("running", "failed"))
    answer = gw.get("/agent/attach-console/myapp.web.0")
    assert answer.status == 426, answer
    assert answer.json["error"]["code"] == "upgrade_required"
    assert gw.get("/agent/attach-console/nope").status == 404
    assert call("POST", f"{gw.base}/agent/delete-process/myapp.web.0")[0] == 200
