"""Where zsup keeps its sockets and state, decided in one place.

Every tool (zsupd, zsupctl, zsup, zsup-http) must agree on the state directory without talking
to each other first, so the rule is deliberately simple and predictable: `$ZSUP_STATE_DIR` if set,
else `~/.zsup`. Nothing depends on who runs it or on XDG variables that differ between a login
shell and a systemd unit.
"""

import os


def default_state_dir() -> str:
    """The state directory: `$ZSUP_STATE_DIR`, else `~/.zsup` (absolute, not created here)."""
    configured = os.environ.get("ZSUP_STATE_DIR")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    return os.path.join(os.path.expanduser("~"), ".zsup")
