#!/usr/bin/env python3
"""Echo every line read on stdin back to stdout, flushed, for trying zsup's stdin feature.

Bytes are passed through unchanged (no decoding), and the program ends at end of input or,
cleanly, on SIGTERM/SIGINT.
"""

import signal
import sys


def stop(signum, frame):
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    out = sys.stdout.buffer
    try:
        for line in sys.stdin.buffer:
            out.write(line)
            out.flush()
    except BrokenPipeError:
        sys.stdout = None


if __name__ == "__main__":
    main()
