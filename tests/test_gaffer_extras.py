"""Smaller items of the gaffer drop-in (issue 13), each against the real gateway app:
attach-console without an upgrade, pulsar-rest-api's own paths."""

import pytest
from conftest import wait_for
from test_agent import CONFIG, Files, make_tar, wait_state
from test_agent import http as call
from test_http_support import GW, start_gateway
from test_tasks import config as task_config


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


@pytest.fixture
def task_gw(zsupd_factory, tmp_path):
    daemon = zsupd_factory(task_config(tmp_path))
    gateway = start_gateway(daemon, tmp_path, timeout=3.0)
    try:
        yield GW(daemon, gateway, tmp_path)
    finally:
        gateway.stop()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_pulsar_paths(task_gw):
    gw = task_gw
    # pulsar's client posts the action as a form field to /:app/:env
    made = gw.post("/demo/production", "action=wait", headers=FORM)
    assert made.status == 200, made
    task_id = made.json["taskId"]
    assert made.json["url"] == f"{gw.base}/tasks/{task_id}"
    task = gw.get(f"/task/{task_id}").json
    assert task["id"] == task_id and task["app"] == "demo" and task["env"] == "production"
    assert task["action"] == "wait" and task["status"] == "running"
    assert gw.get(f"/task/{task_id}").json["id"] == gw.get(f"/tasks/{task_id}").json["id"]
    wait_for(lambda: "begin" in gw.get(f"/task/{task_id}").json["output"], message="output")
    seen = gw.get(f"/task/{task_id}").json["version"]
    polled = gw.get(f"/task/{task_id}/state?timeout=0.2&version={seen}")
    assert polled.status == 200 and polled.json == {"changed": False}
    (gw.tmp_path / "go").write_text("")
    polled = gw.get(f"/task/{task_id}/state?timeout=10&version={seen}", timeout=20)
    assert polled.json["changed"] is True and polled.json["task"]["id"] == task_id
    killed = gw.get(f"/task/{task_id}/kill")
    assert killed.status == 200 and killed.json["id"] == task_id
    # errors as under /tasks; zsup's own routes are never taken for an app
    assert gw.get("/task/999").status == 404
    assert gw.post("/demo/production", "", headers=FORM).status == 400
    assert gw.post("/nope/production", "action=hello", headers=FORM).status == 404
    assert gw.post("/jobs/default", {"name": "x", "cmd": "true"}).status == 201
    assert gw.get("/demo/production").status == 405
    assert gw.post("/processes/1", "action=hello", headers=FORM).status == 405
