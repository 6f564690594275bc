"""gaffer's websocket protocols on bad input (Python 3, ws4py clients; gaffer's own client is
exercised in test_gaffer_client.py): every bad frame gets an answer and the socket keeps
serving; unknown targets are refused before the upgrade."""

import json
import queue

import pytest
from conftest import close_ws_clients
from test_http_support import echo_job, gw  # noqa: F401
from ws4py.client.threadedclient import WebSocketClient
from ws4py.exc import HandshakeError


class WS(WebSocketClient):
    def __init__(self, url):
        super().__init__(url)
        self.messages = queue.Queue()

    def received_message(self, message):
        self.messages.put(message.data)

    def next(self, timeout=10.0):
        return self.messages.get(timeout=timeout)

    def next_json(self, timeout=10.0):
        return json.loads(self.next(timeout))


@pytest.fixture
def ws(gw):
    made = []

    def connect(path):
        client = WS(f"ws://{gw.host}:{gw.port}{path}")
        try:
            client.connect()
        except BaseException:
            client.close_connection()
            raise
        made.append(client)
        return client

    try:
        yield connect
    finally:
        close_ws_clients(made)


def test_channel_answers_bad_frames_and_keeps_serving(gw, ws):
    sock = ws("/channel/websocket")
    sock.send("AUTH:whatever")  # accepted and ignored
    sock.send("not json")
    assert sock.next_json()["data"]["error"] == "invalid_msg"
    sock.send(json.dumps({"event": "SUB"}))
    assert sock.next_json()["event"] == "gaffer:error"
    sock.send(json.dumps({"event": "DANCE", "data": {}}))
    assert sock.next_json()["event"] == "gaffer:error"
    sock.send(json.dumps({"event": "SUB", "data": {"topic": "BOGUS:1"}}))
    err = sock.next_json()
    assert err["event"] == "gaffer:subscription_error" and err["topic"] == "BOGUS:1"
    sock.send(json.dumps({"event": "SUB", "data": {"topic": "STREAM:x"}}))
    assert sock.next_json()["event"] == "gaffer:subscription_error"
    sock.send(json.dumps({"event": "CMD", "data": {"identity": "a", "name": "scale",
                                                   "args": ["default.nope"]}}))
    err = sock.next_json()
    assert err == {"event": "gaffer:command_error",
                   "data": {"id": "a", "error": {"errno": 400,
                                                 "reason": "scale: expected at least 2 argument(s)"}}}
    sock.send(json.dumps({"event": "CMD", "data": {"identity": "b", "name": "kill",
                                                   "args": ["x", "HUP"]}}))
    assert sock.next_json()["event"] == "gaffer:command_error"
    sock.send(json.dumps({"event": "NOP"}))
    sock.send(json.dumps({"event": "CMD", "data": {"identity": "c", "name": "sessions"}}))
    assert sock.next_json() == {"event": "gaffer:command_success",
                                "data": {"id": "c", "result": {"sessions": []}}}


def test_io_channel_bad_frames_and_refusals(gw, ws):
    gw.load(echo_job())
    pid = gw.pid_of("default.echo")[0]
    with pytest.raises(HandshakeError, match="404"):
        ws("/999999/channel")
    with pytest.raises(HandshakeError, match="404"):
        ws(f"/{pid}/channel/nolabel?mode=1")

    reader = ws(f"/{pid}/channel?mode=1")
    reader.send(b"garbage", binary=True)
    kind, _, body = reader.next().partition(b"\0")
    assert kind == b"V1 error gaffer_error" and json.loads(body)["errno"] == 400
    reader.send(b"V1 message m1\0hello\n", binary=True)  # read-only: no writing
    kind, _, body = reader.next().partition(b"\0")
    assert kind == b"V1 error m1" and json.loads(body)["reason"] == "EPERM"

    writer = ws(f"/{pid}/channel?mode=2")
    writer.send(b"V1 message m2\0hello\n", binary=True)
    assert writer.next() == b"V1 response m2\0OK"
    kind, _, body = reader.next().partition(b"\0")
    assert kind.startswith(b"V1 message ") and body == b"hello\n"
