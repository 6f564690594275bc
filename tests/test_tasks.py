"""The task API (pulsar-rest-api): a real zsupd, the real BusGate, the WSGI app served by the
gateway's HTTP server on a real port."""

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import mount, wait_for

from zsup.daemon.config import parse_config
from zsup.http import tasks_api
from zsup.http.busgate import BusGate
from zsup.http.server import Endpoint, HTTPServer

PYTHON = sys.executable

TASK_SCRIPT = r'''
import os, sys, time
what = sys.argv[1]
if what == "hello":
    print("greeting", os.environ.get("GREETING"), "task", os.environ.get("ZSUP_TASK_ID"), flush=True)
    print("oops", file=sys.stderr, flush=True)
elif what == "wait":
    print("begin", flush=True)
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.02)
    print("end", flush=True)
elif what == "fail":
    print("failing", flush=True)
    sys.exit(3)
elif what == "big":
    line = "x" * 99 + "\n"
    sys.stdout.write(line * 3000)   # 300 kB
    sys.stdout.flush()
'''


def config(tmp_path, limit="64k"):
    script = tmp_path / "task.py"
    script.write_text(TASK_SCRIPT)
    (tmp_path / ".env.production").write_text("GREETING=from-dotenv\n")
    go = tmp_path / "go"
    jobs = "".join(f"""
[process:demo:{name}]
cmd = {PYTHON} {script} {name} {go}
cwd = {tmp_path}
numprocesses = 0
graceful_timeout = 5
""" for name in ("hello", "wait", "fail", "big"))
    return f"""
[zsup]
task_output_limit = {limit}
{jobs}
[env:demo.staging]
greeting = from-config
"""


class Gateway:
    """The task API served for real, as the gateway would mount it at /tasks."""

    def __init__(self, zsupd):
        self.gate = BusGate(zsupd.bus, zsupd.pub, timeout=2.0)
        app = tasks_api.make_app(self.gate, lambda req: req.host_url + req.script_name)
        self.server = HTTPServer(mount("/tasks", app), [Endpoint("test", "127.0.0.1:0")], None, threads=8)
        self.server.start()
        address = self.server.addresses[0]
        self.url = f"http://{address.host}:{address.port}/tasks"

    def stop(self):
        self.server.stop()
        self.gate.close()


@pytest.fixture
def gateways():
    made = []

    def make(zsupd):
        gw = Gateway(zsupd)
        made.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in made:
            gw.stop()


def http(method, url, data=None, json_body=None, timeout=30):
    headers = {}
    body = None
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif data is not None:
        body = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get_task(gw, task_id):
    status, task = http("GET", f"{gw.url}/{task_id}")
    assert status == 200, task
    return task


def wait_status(gw, task_id, statuses=("finished", "failed", "killed"), timeout=10):
    return wait_for(lambda: (t := get_task(gw, task_id))["status"] in statuses and t, timeout=timeout,
                    interval=0.02, message=f"task {task_id} in {statuses}")


def test_env_app_env_section_is_kept_for_tasks(tmp_path):
    cfg = parse_config("[env:myapp.staging]\nfoo = 1\nBar = two\n[process:web]\ncmd = true\n[env:web]\nx = 1\n",
                       str(tmp_path / "z.ini"))
    assert cfg.task_envs == {"myapp.staging": {"FOO": "1", "BAR": "two"}}
    assert cfg.jobs[0].env == {"X": "1"}
    with pytest.raises(Exception, match="not a valid name"):
        parse_config("[env:my app.staging]\nfoo = 1\n", str(tmp_path / "z.ini"))
    with pytest.raises(Exception, match="no \\[process:web2\\]"):
        parse_config("[env:web2]\nfoo = 1\n", str(tmp_path / "z.ini"))
    assert parse_config("[zsup]\ntask_output_limit = 2M\n").settings["task_output_limit"] == 2 * 1024 ** 2


def test_pulsar_flow(tmp_path, zsupd_factory, gateways):
    zsupd = zsupd_factory(config(tmp_path))
    gw = gateways(zsupd)
    go = tmp_path / "go"

    # create (form parameter) and get: env from [env:demo.staging], stdout and stderr
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "hello"})
    assert status == 200 and isinstance(body["taskId"], int), body
    first = body["taskId"]
    task = wait_status(gw, first)
    assert task["status"] == "finished" and task["exitCode"] == 0
    assert f"greeting from-config task {first}\n" in task["output"] and "oops\n" in task["output"]
    assert {"id", "status", "app", "env", "action", "exitCode", "output", "pid"} <= set(task)
    assert (task["app"], task["env"], task["action"]) == ("demo", "staging", "hello")
    assert isinstance(task["pid"], int) and task["truncated"] is False

    # JSON body; env from .env.production in the job's cwd
    status, body = http("POST", f"{gw.url}/demo/production", json_body={"action": "hello"})
    assert status == 200
    task = wait_status(gw, body["taskId"])
    assert "greeting from-dotenv" in task["output"]

    # failure
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "fail"})
    task = wait_status(gw, body["taskId"])
    assert task["status"] == "failed" and task["exitCode"] == 3 and task["output"] == "failing\n"

    # errors
    assert http("POST", f"{gw.url}/demo/staging", data={"action": "nope"})[0] == 404
    assert http("POST", f"{gw.url}/demo/nowhere", data={"action": "hello"})[0] == 404
    status, body = http("POST", f"{gw.url}/demo/staging", data={})
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert http("GET", f"{gw.url}/99999")[0] == 404
    assert http("DELETE", f"{gw.url}/{first}")[0] == 405

    # long-poll: no change on a waiting task, then a change as soon as it writes
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "wait"})
    waiting = body["taskId"]
    wait_for(lambda: get_task(gw, waiting)["output"] == "begin\n", message="begin")
    assert http("GET", f"{gw.url}/{waiting}/state?timeout=0.3") == (200, {"changed": False})
    seen = get_task(gw, waiting)["version"]
    answer = {}
    poller = threading.Thread(
        target=lambda: answer.update(r=http("GET", f"{gw.url}/{waiting}/state?timeout=20&version={seen}")))
    poller.start()
    try:
        wait_for(lambda: any(s.patterns == [f"task.{waiting}.update"] for s in list(gw.gate.subscriptions)),
                 message="long-poll in flight")
        assert "r" not in answer  # nothing changed yet: it waits
        go.write_text("")
    finally:
        poller.join(25)
    status, body = answer["r"]
    assert status == 200 and body["changed"] is True
    assert body["task"]["id"] == waiting and body["task"]["output"].startswith("begin\nend")
    task = wait_status(gw, waiting)
    assert task["status"] == "finished" and task["output"] == "begin\nend\n"
    # a client that says it saw an older version gets the task at once
    assert http("GET", f"{gw.url}/{waiting}/state?timeout=5&version={seen}")[1]["changed"] is True
    go.unlink()

    # kill (GET and POST both work)
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "wait"})
    victim = body["taskId"]
    wait_for(lambda: get_task(gw, victim)["status"] == "running" and get_task(gw, victim)["output"], message="run")
    assert http("GET", f"{gw.url}/{victim}/kill")[0] == 200
    task = wait_status(gw, victim)
    assert task["status"] == "killed" and task["output"] == "begin\n"
    assert http("POST", f"{gw.url}/{victim}/kill")[1]["status"] == "killed"  # idempotent

    # list: newest first, paging
    status, page = http("GET", f"{gw.url}?limit=2")
    assert status == 200 and [t["id"] for t in page["tasks"]] == [victim, waiting]
    assert page["total"] == 5 and page["next"].endswith("limit=2&offset=2") and "output" not in page["tasks"][0]
    status, page = http("GET", page["next"])
    assert [t["id"] for t in page["tasks"]] == [victim - 2, victim - 3]


def test_output_is_bounded_and_records_survive_restarts(tmp_path, zsupd_factory, gateways):
    zsupd = zsupd_factory(config(tmp_path, limit="64k"))
    gw = gateways(zsupd)
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "big"})
    big = body["taskId"]
    task = wait_status(gw, big)
    assert task["status"] == "finished"
    assert len(task["output"]) == 65536 and task["outputBytes"] == 65536
    assert task["truncated"] is True and task["droppedBytes"] == 300000 - 65536

    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "wait"})
    left = body["taskId"]
    wait_for(lambda: get_task(gw, left)["output"] == "begin\n", message="begin")

    # gateway restart: same records
    gw.stop()
    gw = gateways(zsupd)
    assert get_task(gw, big)["truncated"] is True

    # zsupd killed and restarted: finished tasks keep their output; the running one died
    # with zsupd (its death signal) and is marked failed by the next zsupd
    zsupd.proc.kill()
    zsupd.proc.wait(10)
    zsupd._log.close()
    assert http("GET", f"{gw.url}/{big}")[0] == 503
    zsupd.start()
    task = wait_for(lambda: http("GET", f"{gw.url}/{left}")[1].get("status") == "failed"
                    and get_task(gw, left), message="left task failed")
    assert task["reason"] == "zsupd restarted" and task["output"] == "begin\n"
    again = get_task(gw, big)
    assert again["outputBytes"] == 65536 and len(again["output"]) == 65536
    # and new tasks get new ids
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "hello"})
    assert body["taskId"] > left
    assert wait_status(gw, body["taskId"])["status"] == "finished"

    # a graceful stop of zsupd stops a running task, which says so
    status, body = http("POST", f"{gw.url}/demo/staging", data={"action": "wait"})
    stopped = body["taskId"]
    wait_for(lambda: get_task(gw, stopped)["output"] == "begin\n", message="begin")
    zsupd.stop()
    zsupd.start()
    task = get_task(gw, stopped)
    assert (task["status"], task["reason"]) == ("failed", "zsupd stopped")
