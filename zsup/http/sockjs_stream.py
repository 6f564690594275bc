"""SockJS's streaming receivers (``xhr_streaming``, ``eventsource``) served by the stream hub:
the waitress worker answers the head and hands the socket over (zsup.http.streams.HandOver);
then what the session gets is framed and queued for the hub as it comes (``Session.listener``),
with no thread held. A heartbeat ``h`` goes after HEARTBEAT idle seconds; the response ends
after STREAM_LIMIT bytes (the client opens the next one) or with the session's close frame.

Thread rules: ``forward`` runs in whichever thread pushed to the session, one at a time.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Callable

from zsup.http.channel import waitress_channel
from zsup.http.hub import Client
from zsup.http.streams import HandOver
from zsup.http.web import StreamResponse

if TYPE_CHECKING:
    from zsup.http.sockjs import Session

__all__ = ["hub_receiver"]


def hub_receiver(hub, req, session: "Session", first: str | None, kind: str, ctype: str,
                 headers: dict, release: Callable[[], None], heartbeat: float,
                 limit: int) -> StreamResponse:
    """The response of a streaming receiver that has claimed `session`."""
    def frame(text: str) -> bytes:
        if kind == "eventsource":
            return f"data: {text}\r\n\r\n".encode("utf-8")
        return (text + "\n").encode("utf-8")

    lock = threading.Lock()
    sent = [0]

    def done() -> None:  # the response ended or its client went away
        if session.listener is forward:
            session.listener = None
        session.last_seen = time.monotonic()
        session.receiving = False
        release()

    client = Client(None, kind=f"sockjs-{kind}",
                    chunked=req.environ.get("SERVER_PROTOCOL") == "HTTP/1.1",
                    fmt_event=lambda event: b"", fmt_line=None, final=b"", beat=frame("h"),
                    heartbeat=heartbeat, release=done)

    def forward() -> None:
        with lock:
            if client.gone or client.ending:
                return
            batch = session.take(0)
            if batch is None:
                hub.send(client, frame("c" + json.dumps(list(session.closed))))
                hub.end(client)
            elif batch:
                data = frame("a" + json.dumps(batch))
                hub.send(client, data)
                sent[0] += len(data)
                if sent[0] > limit:
                    session.listener = None
                    hub.end(client)

    def join(client: Client) -> None:
        head = (first or "").encode("utf-8")
        if not session.opened_sent:
            session.opened_sent = True
            head += frame("o")
        if head:
            hub.send(client, head)
        session.listener = forward
        forward()

    body = HandOver(hub, client, waitress_channel(req.environ), join)
    return StreamResponse(body, ctype, headers=headers)
