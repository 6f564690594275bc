#!/usr/bin/env python3
"""A well-behaved long-running child for trying zsup: says hello, then one line a second.

Every line is flushed at once (a pipe would otherwise buffer it), and SIGTERM or SIGINT
ends it cleanly with exit status 0, as a supervisor's graceful stop expects.
"""

import os
import signal
import sys
import time


def stop(signum, frame):
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid = os.getpid()
    try:
        print(f"hello, dummy (pid: {pid}) is alive", flush=True)
        tick = 0
        while True:
            time.sleep(1)
            tick += 1
            print(f"dummy (pid: {pid}) tick {tick}", flush=True)
    except SystemExit:
        try:
            print(f"dummy (pid: {pid}) stopping", flush=True)
        except BrokenPipeError:
            sys.stdout = None
    except BrokenPipeError:  # the reader went away: nothing left to say
        sys.stdout = None


if __name__ == "__main__":
    main()
