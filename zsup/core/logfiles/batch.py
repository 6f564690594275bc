"""Formatting one batch of output lines for a log file, and writing it: C-level work per
batch or per piece, never Python work per line (the writer thread's hot path)."""

from __future__ import annotations

import json
import os
import time
from typing import Iterator

json_str = json.JSONEncoder(ensure_ascii=False).encode

# A text batch is prefixed in pieces of about this much input (~90 KB of output for short
# lines) and the pieces are written as they are made, with `os.writev`, never joined: the
# writer's memory stays small and warm instead of a fresh ~5.5 MB per 1 MiB batch (fresh
# memory means page faults, and those were most of the writer's CPU time), and each piece is
# still in the cache when the kernel copies it.
PIECE = 16 * 1024
IOV_MAX = 1024  # Linux's limit on the buffers of one writev


def text_size(data: bytes, first: bytes, short: bytes, nlines: int) -> int:
    """The bytes of a batch of `nlines` lines in the text format, computed without formatting it."""
    ends = data[-1:] == b"\n"
    return len(first) + len(data) + len(short) * (nlines - 1) + (not ends)


def count_lines(data: bytes) -> int:
    """Lines as OutputStream counts them: newlines, plus one for a last piece without one."""
    return data.count(b"\n") + (data[-1:] != b"\n")


def text_pieces(data: bytes, first: bytes, short: bytes) -> Iterator[tuple[bytes, int]]:
    """The text format of one batch, piece by piece: `first` before its first line, `short`
    before every other one, a newline after the last. Yields (buffer, lines ended in it);
    a buffer with lines > 0 ends at a line end, so a write may stop after it.

    No Python work per line: one C-level `replace` and one `rfind` per PIECE of input.
    """
    size_short = len(short)
    nl_short = b"\n" + short
    size, pos, lead = len(data), 0, first
    while size - pos > PIECE:
        cut = data.rfind(b"\n", pos, pos + PIECE)
        if cut < 0:  # one line longer than a piece
            cut = data.find(b"\n", pos + PIECE)
            if cut < 0 or cut == size - 1:
                break
        # Every newline here is followed by another line: each gets that line's prefix,
        # which is cut off again (a view, no copy) so that the buffer ends at a line end.
        out = data[pos:cut + 1].replace(b"\n", nl_short)
        yield lead, 0
        yield memoryview(out)[:-size_short], (len(out) - (cut + 1 - pos)) // size_short
        lead, pos = short, cut + 1
    tail = data[pos:] if pos else data
    n = tail.count(b"\n")
    yield lead, 0
    if tail[-1:] == b"\n":
        yield (tail.replace(b"\n", nl_short, n - 1) if n > 1 else tail), n
    else:  # a piece of an over-long line (or a last line without its newline)
        yield (tail.replace(b"\n", nl_short) if n else tail) + b"\n", n + 1


def write_all(fd: int, parts: list[bytes], nbytes: int) -> None:
    """Write `parts` in order with as few `writev` calls as the kernel allows."""
    if len(parts) == 1 and nbytes == len(parts[0]):
        view = memoryview(parts[0])
        while view:
            view = view[os.write(fd, view):]
        return
    i = 0
    while i < len(parts):
        group = parts[i:i + IOV_MAX]
        want = sum(map(len, group))
        n = os.writev(fd, group)
        if n == want:
            i += len(group)
            continue
        # A short write (a signal, a full disk): finish the piece it stopped in, go on.
        for j, part in enumerate(group):
            if n < len(part):
                view = memoryview(part)[n:]
                while view:
                    view = view[os.write(fd, view):]
                i += j + 1
                break
            n -= len(part)


def format_time(t: float) -> str:
    """`2026-11-25T14:29:43.123456Z`: UTC, microseconds (truncated, so parsing never goes later)."""
    sec, us = divmod(int(t * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % us
