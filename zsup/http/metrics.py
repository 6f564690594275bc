"""`GET /metrics`: zsupd's `metrics` bus command, in Prometheus's text format (docs/metrics.md).

The gateway asks zsupd once per scrape and hands the answer to a custom prometheus_client
Collector registered in a registry of its own (never the library's global one: several
gateways may live in one process, as in the tests). The gateway's own gauges (open streams,
websockets) come from the app. A scrape while zsupd is down answers 503 with the bus error.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from webob import Response

#: The classic text format, which every Prometheus reads (our names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PROC = [("cpu_seconds", "zsup_process_cpu_seconds_total", "counter", "CPU time (user + system) of the process"),
         ("rss", "zsup_process_resident_memory_bytes", "gauge", "Resident memory of the process"),
         ("fds", "zsup_process_open_fds", "gauge", "Open file descriptors of the process"),
         ("start_time", "zsup_process_start_time_seconds", "gauge", "Start time of the process (Unix time)")]


def _family(kind: str, name: str, doc: str, labels: list[str]) -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class SnapshotCollector:
    """Turns one `metrics` answer (and the gateway's own counts) into metric families."""

    def __init__(self, snapshot: dict, gateway: dict[str, int]):
        self.snap = snapshot
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        yield from self._daemon()
        yield from self._jobs()
        yield from self._processes()
        yield from self._bus()
        for name, doc in (("open_streams", "HTTP streams (feeds, long polls) the gateway holds open"),
                          ("websockets", "Websockets the gateway holds open")):
            g = GaugeMetricFamily(f"zsup_gateway_{name}", doc)
            g.add_metric([], self.gateway.get(name, 0))
            yield g

    def _daemon(self) -> Iterator[Metric]:
        d = self.snap["daemon"]
        info = GaugeMetricFamily("zsup_daemon_info", "zsupd's version and pid (always 1)", labels=["version", "pid"])
        info.add_metric([d["version"], str(d["pid"])], 1)
        yield info
        lag = GaugeMetricFamily("zsup_loop_lag_seconds", "How long a call waited for the loop to pick it up "
                                "(measured at scrape time)", labels=["loop"])
        for loop, seconds in d["loop_lag"].items():
            lag.add_metric([loop], seconds)
        yield lag
        start = GaugeMetricFamily("zsup_daemon_start_time_seconds", "When zsupd started (Unix time)")
        start.add_metric([], d["start_time"])
        yield start
        for key, name, kind, doc in _PROC:
            if key in d:
                family = _family(kind, name.replace("zsup_process_", "zsup_daemon_"), doc.replace("the process",
                                 "zsupd itself"), [])
                family.add_metric([], d[key])
                yield family

    def _jobs(self) -> Iterator[Metric]:
        labels = ["job"]
        gauges = {key: GaugeMetricFamily(f"zsup_job_{name}", doc, labels=labels) for key, name, doc in (
            ("wanted", "processes_wanted", "Processes the job should run (0 while it is stopped)"),
            ("running", "processes_running", "Processes of the job that are running"),
            ("ready", "processes_ready", "Running processes that passed their ready check (all, without one)"),
            ("active", "active", "1 when the job is started"),
            ("flapping", "flapping", "1 while the job's flapping rule holds it back or has given up"))}
        counters = {key: CounterMetricFamily(f"zsup_job_{name}", doc, labels=labels) for key, name, doc in (
            ("restarts", "restarts", "Processes replaced after dying on their own"),
            ("spawn_failures", "spawn_failures", "Spawns that failed (bad command, permissions, limits)"),
            ("flaps", "flaps", "Times the job's flapping rule tripped"))}
        state = GaugeMetricFamily("zsup_job_state", "1 for the job's current state", labels=["job", "state"])
        exits = CounterMetricFamily("zsup_job_exits", "Processes that exited, by exit code or signal name",
                                    labels=["job", "code"])
        last = GaugeMetricFamily("zsup_job_last_exit_code", "Exit code of the job's last exited process",
                                 labels=labels)
        for row in self.snap["jobs"]:
            job = row["job"]
            for key, family in gauges.items():
                family.add_metric([job], float(row[key]))
            for key, family in counters.items():
                family.add_metric([job], row[key])
            state.add_metric([job, row["state"]], 1)
            for code, count in sorted(row["exits"].items()):
                exits.add_metric([job, code], count)
            if row["last_exit_code"] is not None:
                last.add_metric([job], row["last_exit_code"])
        yield from gauges.values()
        yield from counters.values()
        yield from (state, exits, last)

    def _processes(self) -> Iterator[Metric]:
        labels = ["job", "pid", "os_pid"]
        for key, name, kind, doc in _PROC:
            family = _family(kind, name, doc, labels)
            for proc in self.snap["processes"]:
                family.add_metric([proc["job"], str(proc["pid"]), str(proc["os_pid"])], proc[key])
            yield family

    def _bus(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("zsup_bus_requests", "Bus requests answered, by command and outcome "
                                       "(ok or the error code)", labels=["cmd", "outcome"])
        for row in self.snap["requests"]:
            requests.add_metric([row["cmd"], row["outcome"]], row["count"])
        yield requests
        events = self.snap["events"]
        published = CounterMetricFamily("zsup_events_published", "Events sent on the bus's PUB socket")
        published.add_metric([], events["published"])
        yield published
        dropped = CounterMetricFamily("zsup_events_dropped", "Events dropped before reaching a consumer",
                                      labels=["consumer"])
        for consumer, count in sorted(events["dropped"].items()):
            dropped.add_metric([consumer], count)
        yield dropped
        logs = self.snap["logs"]
        for key, doc in (("bytes_written", "Bytes written to job log files"),
                         ("write_errors", "Failed writes to job log files"),
                         ("lines_written", "Lines written to job log files"),
                         ("lines_dropped", "Lines lost on the way to the log files (queue full, disk trouble)")):
            family = CounterMetricFamily(f"zsup_log_{key}", doc)
            family.add_metric([], logs[key])
            yield family


def metrics_response(app) -> Response:
    """The answer to GET /metrics; bus errors propagate (the app maps them to HTTP)."""
    snapshot = app.gate.call("metrics")
    count_websockets = getattr(app, "count_websockets", None)
    gateway = {"open_streams": app.open_streams, "websockets": count_websockets() if count_websockets else 0}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, gateway))
    return Response(body=generate_latest(registry), headerlist=[("Content-Type", CONTENT_TYPE)])
