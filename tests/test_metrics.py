"""GET /metrics: a real zsupd, a real gateway, scraped over HTTP and parsed with prometheus_client's
own parser (docs/metrics.md)."""

import sys

from conftest import close_ws_clients, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_http_support import gw, ticker_job  # noqa: F401
from ws4py.client.threadedclient import WebSocketClient


def scrape(gw):
    answer = gw.get("/metrics")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_scraped_and_parsed(gw):
    gw.load(ticker_job("tick"))
    crash = {"name": "crash", "cmd": sys.executable, "args": ["-c", "import sys; sys.exit(3)"],
             "flapping": "2, 5, 60, 1"}
    gw.load(crash)
    gw.load({"name": "nope", "cmd": "/nonexistent/program"})
    # running, never ready: nothing listens on port 1
    gw.load({"name": "waits", "cmd": "sleep", "args": ["60"], "ready": "tcp:127.0.0.1:1", "ready_timeout": 60})
    gw.load({**crash, "name": "quitter", "flapping": "1, 5, 0.1, 0"})  # gives up at once
    tick_pid = gw.pid_of("default.tick")[0]
    ws = WebSocketClient(f"ws://{gw.host}:{gw.port}/channel/job.")
    ws.connect()
    try:
        def flapped():
            s = scrape(gw)
            return s if value(s, "zsup_job_flapping", job="default.crash") == 1 else None

        s = wait_for(flapped, timeout=20, message="the crash job to flap")
        # per job
        assert value(s, "zsup_job_processes_wanted", job="default.tick") == 1
        assert value(s, "zsup_job_processes_running", job="default.tick") == 1
        assert value(s, "zsup_job_processes_ready", job="default.tick") == 1
        assert value(s, "zsup_job_processes_running", job="default.waits") == 1
        assert value(s, "zsup_job_processes_ready", job="default.waits") == 0
        assert value(s, "zsup_job_flapping", job="default.tick") == 0
        assert value(s, "zsup_job_state", job="default.crash", state="flapping") == 1
        assert value(s, "zsup_job_exits_total", job="default.crash", code="3") >= 3
        assert value(s, "zsup_job_restarts_total", job="default.crash") >= 3
        assert value(s, "zsup_job_flaps_total", job="default.crash") == 1
        assert value(s, "zsup_job_last_exit_code", job="default.crash") == 3
        assert value(s, "zsup_job_spawn_failures_total", job="default.nope") >= 1
        s = wait_for(lambda: (lambda s: s if value(s, "zsup_job_state", job="default.quitter", state="failed")
                                        else None)(scrape(gw)), message="the quitter to give up")
        assert value(s, "zsup_job_flapping", job="default.quitter") == 1
        assert value(s, "zsup_job_restarts_total", job="default.tick") == 0
        # per process
        from zsup.bus.client import Client
        with Client(gw.d.bus) as c:
            os_pid = c.call("get_process", pid=tick_pid)["os_pid"]
        key = {"job": "default.tick", "pid": str(tick_pid), "os_pid": str(os_pid)}
        assert value(s, "zsup_process_resident_memory_bytes", **key) > 1_000_000
        assert value(s, "zsup_process_open_fds", **key) >= 3
        assert value(s, "zsup_process_cpu_seconds_total", **key) >= 0
        assert abs(value(s, "zsup_process_start_time_seconds", **key) - __import__("time").time()) < 120
        # zsupd itself, the bus, the gateway
        assert 0 <= value(s, "zsup_loop_lag_seconds", loop="supervisor") < 5
        assert value(s, "zsup_daemon_resident_memory_bytes") > 1_000_000
        assert value(s, "zsup_bus_requests_total", cmd="load", outcome="ok") == 5
        assert value(s, "zsup_bus_requests_total", cmd="metrics", outcome="ok") >= 1
        assert value(s, "zsup_events_published_total") > 0
        assert value(s, "zsup_events_dropped_total", consumer="bus") == 0
        assert value(s, "zsup_log_bytes_written_total") >= 0
        assert value(s, "zsup_log_write_errors_total") == 0
        assert value(s, "zsup_gateway_websockets") == 1
        assert value(s, "zsup_gateway_open_streams") == 0
    finally:
        close_ws_clients([ws])
    wait_for(lambda: value(scrape(gw), "zsup_gateway_websockets") == 0, message="websocket count back to 0")

    # an error answered by zsupd is counted with its code; an unloaded job's series go away
    assert gw.post("/bus/info", {"name": "ghost"}).status == 404
    assert gw.request("DELETE", "/jobs/default/crash").status == 200
    s = scrape(gw)
    assert value(s, "zsup_bus_requests_total", cmd="info", outcome="not_found") == 1
    assert value(s, "zsup_job_processes_wanted", job="default.crash") is None
    assert value(s, "zsup_job_restarts_total", job="default.crash") is None


def test_metrics_needs_the_gateways_auth_and_zsupd(gw):
    """/metrics is behind the same door as the rest; with zsupd gone it answers 503."""
    gw.d.stop()
    answer = gw.get("/metrics")
    assert answer.status == 503, answer
