"""zsupd: the supervisor daemon (gafferd's options, plus --state-dir and --log-file)."""

from __future__ import annotations

import argparse
import os
import sys

from zsup import __version__
from zsup.cli.daemonize import daemonize, setup_logging
from zsup.cli.daemonize import pidfile as write_pidfile
from zsup.cli.options import Parser, add_verbosity, alias, bind_address, positive_int
from zsup.daemon.config import load_config, parse_config
from zsup.errors import ZsupError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="zsupd", description="Run and supervise processes; control them over the "
                                "zsup bus (zsupctl), HTTP and websockets.")
    p.add_argument("config", nargs="?", help="configuration file")
    p.add_argument("-c", "--config", dest="config_opt", metavar="CONFIG_FILE", help="configuration file")
    p.add_argument("--plugin-dir", metavar="DIR", help="plugin folder (default: the config's plugin_dir, "
                   "else <state_dir>/plugins)")
    alias(p, "-p", "--plugins-dir", dest="plugin_dir")  # gafferd's spelling
    add_verbosity(p, "more output: debug messages; -vv also prints every child's output")
    p.add_argument("--daemon", action="store_true", help="start zsupd in the background")
    p.add_argument("--pidfile", metavar="FILE", help="write zsupd's pid to this file")
    p.add_argument("--bind", type=bind_address, metavar="ADDRESS",
                   help="serve HTTP here only: HOST:PORT, [IPv6]:PORT, PORT or unix:PATH (default: the "
                        "config's endpoints)")
    p.add_argument("--certfile", metavar="FILE", help="TLS certificate for --bind")
    p.add_argument("--keyfile", metavar="FILE", help="TLS key for --bind")
    p.add_argument("--backlog", type=positive_int, metavar="N", help="listen backlog for --bind (default: 1024)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where sockets, state and logs live (default: $ZSUP_STATE_DIR or ~/.zsup)")
    p.add_argument("--log-file", metavar="FILE", help="zsupd's own log (default: standard error)")
    p.add_argument("--init", action="store_true",
                   help="run as a container's init: reap every orphan at once, exit with [zsup] exit_with's "
                   "status (default: on when zsupd is pid 1)")
    p.add_argument("--version", action="version", version=f"zsupd {__version__}")
    p.add_argument("--create-admin-user", action="store_true",
                   help="create a gaffer admin user (--username, --password) in the store and exit")
    p.add_argument("--username", help="with --create-admin-user")
    p.add_argument("--password", help="with --create-admin-user")
    return p


def read_config(args):
    overrides = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if getattr(args, "plugin_dir", None):
        overrides["plugin_dir"] = args.plugin_dir
    if args.pidfile:
        overrides["pidfile"] = args.pidfile
    path = args.config_opt or args.config
    if path:
        return load_config(path, overrides), overrides
    config = parse_config("", "<defaults>", overrides)
    config.path = None
    return config, overrides


def create_admin_user(config, username: str | None, password: str | None) -> int:
    """gafferd's --create-admin-user: an admin for gaffer's keys (docs/http.md)."""
    from zsup.daemon.gaffer_keys import GafferKeys
    from zsup.daemon.store import Store
    from zsup.paths import default_state_dir

    if not username or not password:
        print("zsupd: error: --create-admin-user needs --username and --password", file=sys.stderr)
        return 2
    state_dir = config.settings.get("state_dir") or default_state_dir()
    store = Store(os.path.join(state_dir, "zsupd.db"))
    try:
        GafferKeys(store).create_user(username, password, user_type=0)
    except ZsupError as exc:
        print(f"zsupd: error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"admin user {username} created")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, overrides = read_config(args)
    except ZsupError as exc:
        print(f"zsupd: error: {exc.message}", file=sys.stderr)
        return 2
    if args.create_admin_user:
        return create_admin_user(config, args.username, args.password)
    from zsup.daemon.daemon import Daemon

    if args.log_file:
        args.log_file = os.path.abspath(args.log_file)
    if args.daemon:
        daemonize()
    setup_logging(args.verbose, args.log_file)
    pidfile = config.settings.get("pidfile")
    bind = args.bind
    http = None
    if bind:
        http = {"bind": bind, "certfile": args.certfile, "keyfile": args.keyfile, "backlog": args.backlog}
    daemon = Daemon(config, overrides, verbose=args.verbose, http_bind=http, init=args.init or os.getpid() == 1)
    try:
        with write_pidfile(pidfile):
            return daemon.run()
    except ZsupError as exc:
        print(f"zsupd: error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
