"""The gateway under bad input: every answer a 4xx JSON error, never a 500 or a traceback."""

import json
import socket

import pytest
from test_http_support import GW, echo_job, gw  # noqa: F401


def raw(gw, request: bytes, timeout=10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer (the server closes or the length is reached)."""
    with socket.create_connection((gw.host, gw.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def assert_json_4xx(status, body, allowed=range(400, 500), parser_ok=False):
    """A 4xx JSON error. With `parser_ok`, also waitress's own short text answer, given
    before the request reaches the app (a request line that is not even a URI)."""
    assert status in allowed, (status, body)
    assert b"Traceback" not in body
    if parser_ok and not body.startswith(b"{"):
        return
    doc = json.loads(body)
    assert set(doc["error"]) == {"code", "message"}, doc
    assert "Traceback" not in doc["error"]["message"]


BAD_PATHS = [
    b"/processes/\xff\xfe",
    b"/jobs/default/\xc3\x28",
    b"/jobs?x=\xff",
    b"/jobs?x=%ff",
    b"/jobs?%c3%28=1",
    b"/processes/99999999999999999999999",
    b"/processes/99999999999999999999999/stats",
    b"/99999999999999999999999",
    b"/streams/99999999999999999999999/stdout",
    b"/processes/-1",
    b"/jobs/%ff%fe/x",
    b"/processes/%00",
    b"/jobs/default/" + b"a" * 5000,
    b"/agent/process-status/\xff",
    b"/tasks/\xff",
    b"/processes/" + b"9" * 5000,  # int() refuses more than 4300 digits
    b"/streams/" + b"9" * 5000 + b"/stdout",
    b"/tasks/" + b"9" * 5000,
    b"/tasks/" + b"9" * 5000 + b"/state",
    b"/tasks/%C2%B2",  # a digit to str.isdigit(), not to int()
    b"/streams/1/stdout?since=" + b"9" * 5000,
]


@pytest.mark.parametrize("method", [b"GET", b"POST", b"DELETE"])
def test_bad_paths_and_queries(gw, method):
    for path in BAD_PATHS:
        body = b"{}" if method == b"POST" else b""
        status, _, answer = raw(gw, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert_json_4xx(status, answer, parser_ok=b"\\x" in repr(path).encode())
    assert gw.get("/ping").status == 200


def test_deep_json_and_bad_bodies(gw):
    gw.load(echo_job())
    deep = b"[" * 100000 + b"]" * 100000
    for path in (b"/jobs/default", b"/jobs/default/echo/numprocesses", b"/jobs/default/echo",
                 b"/agent/create-process", b"/tasks"):
        for body in (deep, b'{"a":' * 50000 + b"1" + b"}" * 50000, b"\xff\xfe", b"[NaN]", b'{"n": 1e999999}',
                     b'{"n": ' + b"9" * 5000 + b"}", b"9" * 5000):
            status, _, answer = raw(gw, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                    b"Content-Type: application/json\r\n"
                                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert_json_4xx(status, answer)
    assert gw.get("/ping").status == 200


def test_bad_content_length(gw):
    for length in (b"abc", b"-5", b"99999999999999999999999999", b"1, 2"):
        status, _, answer = raw(gw, b"POST /jobs/default HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b"Content-Length: " + length + b"\r\n\r\n{}")
        assert 400 <= status < 500, (length, status, answer)
        if answer.startswith(b"{"):
            assert_json_4xx(status, answer)
    # a body shorter than announced: the server waits for the rest, then the client leaves;
    # the gateway stays up
    with socket.create_connection((gw.host, gw.port), timeout=5) as sock:
        sock.sendall(b"POST /jobs/default HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
    # too large
    status, _, answer = raw(gw, b"POST /jobs/default HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            b"Content-Length: 5000000\r\n\r\n" + b" " * 5000000)
    assert_json_4xx(status, answer)
    assert gw.get("/ping").status == 200
