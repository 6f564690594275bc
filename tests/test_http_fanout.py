"""Cheap fan-out: an output event is formatted once for all its clients, a busy stream is
written in batches, a quiet one at once, and a long stream's waitress buffer does not grow."""

import sys
import time

from test_http_support import LineReader, echo_job, gw, sse_blocks  # noqa: F401 (gw: a fixture)

from zsup.bus.protocol import Event, split_lines
from zsup.http import streams

# 40 numbered lines every 10 ms (4,000 lines/s), forever.
CHATTY = ("import sys, time\nn = 0\nwhile True:\n"
          "    sys.stdout.write(''.join('line %d\\n' % (n + i) for i in range(40)))\n"
          "    sys.stdout.flush()\n    n += 40\n    time.sleep(0.01)\n")


def test_a_batch_is_formatted_as_its_lines_one_by_one():
    samples = [b"a\nb\n", b"a\r\nb\rc\n", b"caf\xc3\xa9\n\xe2\x82\nlast", b"\xff\xfe\n\n\n",
               b"no newline", b"\n", "€ ü\n".encode()]
    for data in samples:
        event = Event("io.default.x.1.stdout", {"seq": 7, "lines": len(split_lines(data))}, data)
        want = b"".join(streams.sse_line(7 + i, line, "stdout")
                        for i, line in enumerate(split_lines(data)))
        assert streams.sse_event(event, "stdout") == want, data
        assert streams.sse_event(event, "stdout") is streams.sse_event(event, "stdout")  # memo
        assert streams.event_line_count(event) == len(split_lines(data))


def test_a_drained_waitress_buffer_is_given_back():
    import threading

    from waitress.buffers import OverflowableBuffer

    from zsup.http.server import _Channel

    class Channel:  # the buffer state of a real channel, without a socket behind it
        outbuf_lock = threading.Condition()
        reset_drained_outbuf = _Channel.reset_drained_outbuf

    channel = Channel()
    channel.outbufs = [OverflowableBuffer(1 << 20)]
    channel.current_outbuf_count = 0
    buf = channel.outbufs[0]
    buf.append(b"x" * 20000)  # past waitress's 8 KiB bytes stage: now a BytesIO
    assert buf.buf is not None
    channel.reset_drained_outbuf()
    assert channel.outbufs[0] is buf  # unsent data stays
    buf.get(20000, skip=True)
    channel.reset_drained_outbuf()
    assert channel.outbufs[0] is not buf and channel.outbufs[0].buf is None
    assert len(channel.outbufs[0]) == 0


class ChunkReader:
    """Reads a streaming response in a thread, keeping chunks (no quadratic text building)."""

    def __init__(self, resp):
        import threading

        self.resp, self.chunks, self.size = resp, [], 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                data = self.resp.read1(1 << 16)
                if not data:
                    return
                self.chunks.append(data)
                self.size += data.count(b"\n\n")
        except Exception:
            return

    @property
    def text(self):
        return b"".join(self.chunks)


def test_many_sse_clients_of_a_busy_stream_get_every_line_in_order(gw):
    gw.load({"name": "chatty", "cmd": sys.executable, "args": ["-u", "-c", CHATTY]})
    pid = gw.pid_of("chatty")[0]
    readers = []
    try:
        for _ in range(20):
            conn = gw.connection(timeout=20)
            conn.request("GET", f"/streams/{pid}/stdout?feed=eventsource")
            resp = conn.getresponse()
            assert resp.status == 200
            readers.append((conn, ChunkReader(resp)))
        deadline = time.monotonic() + 30
        while any(r.size < 2000 for _, r in readers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [sub.dropped for sub in gw.g.gate.subscriptions if sub.dropped]
        for _, reader in readers:
            blocks = [b for b in sse_blocks(reader.text) if "id" in b]
            assert len(blocks) >= 2000
            ids = [int(b["id"]) for b in blocks]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap, no repeat
            assert all(b["event"] == "stdout" for b in blocks)
            assert [b["data"] for b in blocks[:3]] == [f"line {i - 1}" for i in ids[:3]]
    finally:
        for conn, _ in readers:
            conn.close()


def test_a_line_after_a_quiet_spell_is_not_held_back(gw, monkeypatch):
    monkeypatch.setattr(streams, "BATCH_DELAY", 0.5)  # the gateway runs in this process
    gw.load(echo_job())
    pid = gw.pid_of("echo")[0]
    conn = gw.connection(timeout=20)
    conn.request("GET", f"/streams/{pid}/stdout?feed=eventsource")
    resp = conn.getresponse()
    assert resp.status == 200
    reader = LineReader(resp)
    try:
        delays = []
        for i in range(6):
            time.sleep(0.7)  # quiet: longer than BATCH_DELAY
            marker = f"quiet-{i}"
            start = time.monotonic()
            assert gw.post(f"/streams/{pid}/stdin", marker + "\n").status == 200
            assert reader.wait(lambda t: marker.encode() in t, timeout=10), reader.text[-300:]
            delays.append(time.monotonic() - start)
        # Only the round trip (HTTP POST, zsupd, the echo process, the bus): no batching delay.
        delays.sort()
        assert delays[len(delays) // 2] < 0.25, delays
    finally:
        conn.close()
