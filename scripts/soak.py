"""`make soak`: the chaos soak of tests/soak.py for minutes (ZSUP_SOAK_SECONDS, default 300),
with its seed (ZSUP_SOAK_SEED) and actions per quiet spell (ZSUP_SOAK_ACTIONS). Prints a
summary; exits 1 if any check found a problem."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from soak import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
