"""schemathesis against the gateway's own /openapi.json: a real zsupd and a real zsup-http
process on loopback; no request generated from the document (valid or not) gets a 5xx, and
both programs are alive, answering and free of tracebacks afterwards.

What a request would run is kept harmless (`cmd` becomes `true`, counts stay small, no
download leaves the machine): the caps have tests of their own. Derandomized and bounded.
"""

import http.client

import pytest
import requests
import schemathesis
from conftest import Zsupd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from soak import Gateway

FUZZ = settings(derandomize=True, deadline=None, max_examples=400, database=None,
                suppress_health_check=list(HealthCheck))
CONFIG = "[process:web]\ncmd = sleep 300\n[process:two]\ncmd = sleep 300\nnumprocesses = 2\n"
COUNTS = ("n", "numprocesses", "max_processes", "limit")


def tame(value):
    """The same request, minus what would run real programs or many of them."""
    if isinstance(value, list):
        return [tame(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        if key == "cmd" and isinstance(v, str):
            v = "true"
        elif key == "args" and isinstance(v, (list, str)):
            v = []
        elif key in ("source_url", "url"):
            v = "file:///nonexistent/zsup-fuzz.tar.gz"
        elif key in COUNTS and str(v).lstrip("+-=").isdigit() and int(str(v).lstrip("+-=")) > 3:
            v = 1
        out[key] = tame(v)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One zsupd and one zsup-http for the module (the cases here change nothing lasting)."""
    tmp = tmp_path_factory.mktemp("fuzz_http")
    d = Zsupd(tmp, CONFIG).start()
    try:
        gateway = Gateway(d.state_dir, str(tmp / "zsup-http.log")).start()
        try:
            yield d, gateway
        finally:
            gateway.stop()
    finally:
        d.stop()


def test_no_request_from_the_openapi_document_gets_a_5xx(served):
    d, gateway = served
    before = len(gateway.log())
    doc = requests.get(gateway.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    session = requests.Session()
    seen = set()

    @FUZZ
    @given(case=cases)
    def fuzz(case):
        if isinstance(case.body, (dict, list)):
            case.body = tame(case.body)
        if case.query:
            case.query = tame(dict(case.query))
        kwargs = case.as_transport_kwargs(base_url=gateway.url)
        # stream=True: a feed answers 200 and never ends; its status is what counts here
        with session.request(**kwargs, stream=True, timeout=10, allow_redirects=False) as resp:
            seen.add((case.method, case.path))
            assert resp.status_code < 500, (case.as_curl_command(), resp.status_code, resp.content[:300])

    fuzz()
    assert len(seen) >= 20, seen  # the run reached most operations, not only a few
    assert gateway.alive() and d.proc.poll() is None
    assert requests.get(gateway.url + "/ping", timeout=10).status_code == 200
    assert d.call("ping") == "pong"
    assert "Traceback" not in gateway.log()[before:], gateway.log()[-3000:]
    with open(d.log_path, errors="replace") as f:
        assert "Traceback" not in f.read()


HOSTILE = [
    ("POST", "/bus/ping", b"[" * 100_000 + b"]" * 100_000, "deep-json-bus"),
    ("POST", "/jobs/default", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep-json-job"),
    ("GET", "/jobs/%ff/x", None, "bad-utf8-path"),
    ("GET", "/jobs/default?x=%ff", None, "bad-utf8-query"),
    ("POST", "/bus/ping", b'{"a": NaN}', "nan"),
    ("POST", "/jobs/default/web/numprocesses", b'{"n": 1e999}', "huge-float"),
    ("GET", "/processes/" + "9" * 40, None, "huge-pid"),
    ("GET", "/processes/" + "9" * 5000, None, "huger-pid"),
    ("POST", "/jobs/default", b"\xff\xfe{", "bad-utf8-body"),
]


@pytest.mark.parametrize("method, path, body", [
    pytest.param(m, p, b, id=i) for m, p, b, i in HOSTILE])
def test_hostile_requests_get_a_4xx_json_error(served, method, path, body):
    d, gateway = served
    before = len(gateway.log())
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.putheader("Content-Type", "application/json")
        conn.endheaders(body)
        resp = conn.getresponse()
        status, text = resp.status, resp.read()
    finally:
        conn.close()
    assert 400 <= status < 500, (status, text[:300])
    assert text.startswith(b"{"), text[:300]
    assert "Traceback" not in gateway.log()[before:]
