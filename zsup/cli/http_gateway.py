"""zsup-http: the HTTP and websocket gateway to zsupd (REST, stream feeds, websockets).

It speaks only bus messages to zsupd. The bus is found from ``--bus``/``--pub``, else
``-c CONFIG`` (its ``bus``/``pub``/``state_dir``), else ``--state-dir``, else
``$ZSUP_BUS``/``$ZSUP_PUB`` (or the default state dir). Endpoints: ``--bind`` (one), else the
config's ``http_endpoints`` (all ``[endpoint:*]`` sections when none is named), else
127.0.0.1:5000. ``zsup-http --hash-password USER`` prints a password file line.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from zsup import __version__
from zsup.cli.daemonize import stop_on_signals
from zsup.cli.options import Parser, add_verbosity, bind_address, log_level, positive_int
from zsup.errors import ZsupError

DEFAULT_BIND = "127.0.0.1:5000"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="zsup-http", description="Serve zsupd over HTTP and websockets.")
    p.add_argument("-c", "--config", metavar="CONFIG_FILE",
                   help="zsupd's configuration file (bus, endpoints, plugin_dir)")
    p.add_argument("--state-dir", metavar="DIR", help="zsupd's state dir (its bus sockets live there)")
    p.add_argument("--bus", metavar="ENDPOINT", help="zsupd's command endpoint (default: $ZSUP_BUS, else "
                   "ipc://<state_dir>/zsupd.sock)")
    p.add_argument("--pub", metavar="ENDPOINT", help="zsupd's events endpoint (default: $ZSUP_PUB, else next "
                   "to the command socket)")
    p.add_argument("--bind", type=bind_address, metavar="ADDRESS",
                   help="serve HTTP here only: HOST:PORT, [IPv6]:PORT, PORT or unix:PATH "
                        f"(default: the config's endpoints, else {DEFAULT_BIND})")
    p.add_argument("--certfile", metavar="FILE", help="TLS certificate for --bind")
    p.add_argument("--keyfile", metavar="FILE", help="TLS key for --bind")
    p.add_argument("--cacert", metavar="FILE", help="require client certificates signed by this CA "
                   "(mutual TLS; with --certfile, on every endpoint)")
    p.add_argument("--backlog", type=positive_int, metavar="N", help="listen backlog for --bind (default: 1024)")
    p.add_argument("--auth-file", metavar="FILE",
                   help="password file (user:scheme$salt$hash lines); every endpoint")
    p.add_argument("--tokens-file", metavar="FILE", help="API tokens file (one per line); every endpoint")
    p.add_argument("--cluster", metavar="URL", help="serve the fleet view (/cluster/...) of the nodes "
                   "registered at URL: a lookupd or etcd://HOST:PORT (default: the config's registry)")
    p.add_argument("--plugin-dir", metavar="DIR", help="plugin folder (default: the config's plugin_dir, "
                   "else <state_dir>/plugins)")
    p.add_argument("--max-streams", type=positive_int, default=10000, metavar="N",
                   help="open stream feeds at most; longpolls: half of --threads at once (default: 10000)")
    p.add_argument("--threads", type=worker_threads, default=32, metavar="N",
                   help="worker threads for requests, half kept for REST and half for requests "
                        "that wait (longpolls, mounted apps); live feeds and websockets need "
                        "none (default: 32)")
    p.add_argument("--max-websockets", type=positive_int, metavar="N",
                   help="websockets open at once per endpoint; more are refused with 503 (default: the "
                        "endpoint's max_websockets, 10000)")
    p.add_argument("--max-client-connections", type=positive_int, metavar="N",
                   help="HTTP connections open at once per client IP address and endpoint "
                        "(default: the endpoint's max_client_connections, 64)")
    p.add_argument("--header-timeout", type=float, metavar="SECONDS",
                   help="seconds a client has to send a complete request head (default: the "
                        "endpoint's header_timeout, 10)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for zsupd's answer (default: 5)")
    p.add_argument("--hash-password", metavar="USER",
                   help="print a password file line for USER (password from the terminal or stdin)")
    add_verbosity(p)
    p.add_argument("--version", action="version", version=f"zsup-http {__version__}")
    return p


def _hash_password(user: str) -> int:
    from zsup.http.auth import hash_password

    if ":" in user or not user:
        print("zsup-http: error: a user name cannot be empty or hold ':'", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            print("zsup-http: error: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("zsup-http: error: empty password", file=sys.stderr)
        return 2
    print(f"{user}:{hash_password(password)}")
    return 0


def resolve(args) -> tuple[str, str, list[dict], str | None]:
    """(bus, pub, endpoint dicts, plugin_dir) from the options; ZsupError/ValueError if bad."""
    from zsup.bus.client import default_endpoints

    config = None
    if args.config:
        from zsup.daemon.config import load_config

        overrides = {"state_dir": args.state_dir} if args.state_dir else None
        config = load_config(args.config, overrides)
        bus, pub = config.settings["bus"], config.settings["pub"]
        plugin_dir = config.settings.get("plugin_dir")
    else:
        bus, pub = default_endpoints(args.state_dir)
        plugin_dir = os.path.join(os.path.abspath(os.path.expanduser(args.state_dir)), "plugins") \
            if args.state_dir else None
    bus = args.bus or bus
    pub = args.pub or pub
    plugin_dir = args.plugin_dir or plugin_dir
    if args.bind:
        endpoints = [{"name": "default", "bind": args.bind, "certfile": args.certfile,
                      "keyfile": args.keyfile, "backlog": args.backlog or 1024,
                      "auth_file": None, "tokens_file": None}]
    elif config is not None and config.endpoints:
        names = config.http_endpoints or sorted(config.endpoints)
        endpoints = [dict(config.endpoints[name], name=name) for name in names]
    else:
        endpoints = [{"name": "default", "bind": DEFAULT_BIND, "certfile": args.certfile,
                      "keyfile": args.keyfile, "backlog": args.backlog or 1024,
                      "auth_file": None, "tokens_file": None}]
    for ep in endpoints:
        if args.cacert:
            if not ep.get("certfile"):
                raise ValueError(f"--cacert needs TLS: endpoint {ep['name']!r} has no certfile")
            ep["cacert"] = args.cacert
        for key in ("auth_file", "tokens_file", "max_websockets", "max_client_connections",
                    "header_timeout"):
            if getattr(args, key, None) is not None:
                ep[key] = getattr(args, key)
    return bus, pub, endpoints, plugin_dir


class Gateway:
    """Everything zsup-http runs: one BusGate, and one HTTPServer per authentication setting
    (endpoints that share their password and tokens files share a server)."""

    def __init__(self, bus: str, pub: str, endpoints: list[dict], plugin_dir: str | None = None,
                 max_streams: int = 10000, timeout: float = 5.0, threads: int = 32):
        from zsup.http.app import GatewayApp
        from zsup.http.auth import Authenticator, check_private
        from zsup.http.busgate import BusGate
        from zsup.http.server import Endpoint, HTTPServer

        self.gate = BusGate(bus, pub, timeout=timeout)
        # job and process events are few: followed from the start, a client's subscription
        # to them (gaffer's EVENTS, JOB:, PROCESS: channels, the event feeds) misses nothing
        # of what it does right after
        self.gate.keep(["job", "proc"])
        self.servers: list[HTTPServer] = []
        self.apps: list[GatewayApp] = []
        groups: dict[tuple, list[Endpoint]] = {}
        for ep in endpoints:
            if ep.get("certfile"):  # the private key: in keyfile, or in certfile without one
                check_private(ep.get("keyfile") or ep["certfile"], f"endpoint {ep['name']!r}: TLS key file")
            key = (ep.get("auth_file"), ep.get("tokens_file"))
            limits = {k: ep[k] for k in ("header_timeout", "max_client_connections",
                                         "max_websockets") if ep.get(k) is not None}
            groups.setdefault(key, []).append(Endpoint(
                name=ep["name"], bind=ep["bind"], backlog=int(ep.get("backlog") or 1024),
                certfile=ep.get("certfile"), keyfile=ep.get("keyfile"), cacert=ep.get("cacert"),
                **limits))
        for (auth_file, tokens_file), group in groups.items():
            app = GatewayApp(self.gate, Authenticator(auth_file, tokens_file), plugin_dir,
                             max_streams=max_streams, threads=threads)
            self.apps.append(app)
            self.servers.append(HTTPServer(
                app, group, app.websocket_routes, threads=app.threads, authorize=app.authorize,
                adjustments={"connection_limit": max_streams + 1000,
                             "channel_request_lookahead": 1,
                             "max_request_body_size": 64 << 20,
                             "ident": "zsup-http"}))
            app.count_websockets = lambda server=self.servers[-1]: len(server.websocket_manager or ())

    @property
    def addresses(self):
        return [a for s in self.servers for a in s.addresses]

    def start(self) -> None:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # The gate first: every open stream and websocket pump sees its subscription closed
        # and ends, so the servers' worker threads finish at once.
        self.gate.close()
        for server in self.servers:
            server.stop()


#: Exit status when an endpoint cannot listen (address in use, no permission, bad
#: certificate): zsupd logs the gateway's error line and `zsupctl status` shows the job failing.
EXIT_CANNOT_LISTEN = 3


def raise_open_files_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (at most the hard limit): every client
    connection is a descriptor, and the default soft limit (often 1024) is below the limits."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, OSError, ValueError) as exc:
        logging.getLogger("zsup.http").info("cannot raise the open files limit: %s", exc)


def fleet_of(args):
    """The fleet for /cluster/*: --cluster, else the config's ``registry`` (and its TLS keys)."""
    source, settings = args.cluster, {}
    if not source and args.config:
        from zsup.daemon.config import load_config

        settings = load_config(args.config).settings
        source = settings.get("registry") or None
    if not source:
        return None
    from zsup.lookup.fleet import Fleet

    return Fleet(source, cacert=settings.get("registry_cacert"), cert=settings.get("registry_cert"),
                 key=settings.get("registry_key"), user=settings.get("registry_user"),
                 password=settings.get("registry_password"), timeout=args.timeout)


def worker_threads(text: str) -> int:
    """An argparse type: a worker pool of at least 2 (one for REST, one for waiting requests)."""
    n = positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"expected a number >= 2, got {text!r}")
    return n


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_password is not None:
        return _hash_password(args.hash_password)
    logging.basicConfig(level=log_level(args.verbose), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        bus, pub, endpoints, plugin_dir = resolve(args)
        gateway = Gateway(bus, pub, endpoints, plugin_dir, args.max_streams, args.timeout, args.threads)
        fleet = fleet_of(args)
        for app in gateway.apps:
            app.fleet = fleet
    except (ZsupError, ValueError) as exc:
        print(f"zsup-http: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    raise_open_files_limit(8192)
    stop = stop_on_signals()
    try:
        gateway.start()
    except (OSError, ValueError) as exc:
        # One line, the endpoint and the reason: zsupd logs it (docs/http.md).
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        print(f"zsup-http: error: {reason}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_LISTEN
    for address in gateway.addresses:
        logging.getLogger("zsup.http").info("zsup-http listening on %s (bus %s)", address, bus)
    try:
        while not stop.wait(3600):
            pass
    finally:
        gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
