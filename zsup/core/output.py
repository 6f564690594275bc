"""Cutting a child's output into numbered lines, and keeping the recent ones.

The IO thread must keep up with a child writing as fast as a pipe allows, so nothing here
touches lines one by one: a read is split once at its last newline, its lines are counted
with `bytes.count`, and the whole batch travels as one chunk (one event, one ring entry,
one log write). Only a reader of the ring pays for splitting.

The ring is bounded twice: by lines (`ring_size`) and by bytes (`ring_max_bytes`), so a child
writing long lines cannot grow the daemon's memory without bound. Both trim whole chunks from
the old end; the newest chunk is always kept, so the ring can briefly hold one read's worth
(at most the pipe read size plus `max_line`) beyond the byte bound, and `read` always answers
the newest lines.
"""

from __future__ import annotations

from collections import deque

RING_MAX_BYTES = 4 * 1024 * 1024  # per stream; `ring_max_bytes` in [zsup] and per job


class OutputStream:
    """One labelled stream of one process: sequence numbers, partial line, ring buffer."""

    def __init__(self, label: str, ring_size: int = 1000, max_line: int = 65536,
                 ring_max_bytes: int = RING_MAX_BYTES):
        self.label = label
        self.ring_size = ring_size
        self.ring_max_bytes = ring_max_bytes
        self.max_line = max_line
        self.last_seq = 0  # seq of the newest line; the first line gets 1
        self._partial = b""
        # chunks: (first_seq, count, payload); a payload holds whole lines, or exactly one
        # piece of an over-long line without its newline.
        self._chunks: deque = deque()
        self._ring_lines = 0
        self._ring_bytes = 0

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Take raw bytes; return the chunks of lines they completed."""
        return self.feed_buffer(data, len(data))

    def feed_buffer(self, buf: bytes | bytearray, n: int) -> list[tuple[int, int, bytes]]:
        """Like feed(buf[:n]), for a read buffer the caller reuses: nothing here keeps `buf`.

        Each byte is copied once, into the payload of its batch (the ring, the bus and the log
        share that one object); only the partial last line is copied again into `_partial`.
        """
        end = buf.rfind(b"\n", 0, n) + 1
        out = []
        with memoryview(buf) as view:
            if end:
                if self._partial:
                    payload = self._partial + view[:end]
                elif end == len(buf) and buf.__class__ is bytes:
                    payload = buf  # the whole read, as is
                else:
                    payload = bytes(view[:end])
                out.append(self._add(payload, payload.count(b"\n")))
                rest = bytes(view[end:n])
            else:
                rest = self._partial + view[:n]
        while len(rest) >= self.max_line:
            out.append(self._add(rest[: self.max_line], 1))
            rest = rest[self.max_line :]
        self._partial = rest
        return out

    def flush(self) -> list[tuple[int, int, bytes]]:
        """At end of file: what is left is a last line without a newline."""
        if not self._partial:
            return []
        rest, self._partial = self._partial, b""
        return [self._add(rest, 1)]

    def _add(self, payload: bytes, count: int) -> tuple[int, int, bytes]:
        chunk = (self.last_seq + 1, count, payload)
        self.last_seq += count
        chunks = self._chunks
        chunks.append(chunk)
        self._ring_lines += count
        self._ring_bytes += len(payload)
        # Per chunk, not per line: a trim drops whole batches, oldest first, never the newest.
        while len(chunks) > 1 and (self._ring_lines - chunks[0][1] >= self.ring_size
                                   or self._ring_bytes > self.ring_max_bytes):
            _, dropped, old = chunks.popleft()
            self._ring_lines -= dropped
            self._ring_bytes -= len(old)
        return chunk

    def read(self, since: int = 0, limit: int | None = None) -> list[tuple[int, bytes]]:
        """Lines with seq > since still in the ring, oldest first (at most ring_size, and about
        ring_max_bytes)."""
        first_kept = max(since, self.last_seq - self.ring_size) + 1
        lines: list[tuple[int, bytes]] = []
        for first, count, payload in list(self._chunks):  # list(): a snapshot under the GIL
            if first + count <= first_kept:
                continue
            if count == 1 and not payload.endswith(b"\n"):
                parts = [payload]
            else:
                parts = payload.split(b"\n")[:-1]
                parts = [p + b"\n" for p in parts]
            for i, line in enumerate(parts):
                seq = first + i
                if seq >= first_kept:
                    lines.append((seq, line))
        if limit is not None and len(lines) > limit:
            lines = lines[-limit:]
        return lines
