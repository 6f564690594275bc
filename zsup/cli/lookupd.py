"""zsup-lookupd: the lookup service where zsupd nodes register (gaffer_lookupd's options).

Differences from gaffer_lookupd, on purpose:
- ``--bind`` defaults to 127.0.0.1:5010 (loopback), not 0.0.0.0:5010: exposing the registry
  is a choice; ``--bind`` may be given more than once (HOST:PORT, [IPv6]:PORT, unix:PATH).
- ``--cacert`` (with ``--certfile``) requires a client certificate signed by that CA on every
  connection (mutual TLS), as gaffer's option promised. Nodes trust a lookupd's certificate
  through their system CA store or ``SSL_CERT_FILE``. ``--tokens-file`` keeps strangers out too.
- ``--etcd URL`` serves the registry kept in etcd (docs/fleet.md) instead of memory: several
  lookupds answer the same, and a restart loses nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
import sys
import threading

from zsup import __version__
from zsup.cli.daemonize import daemonize, setup_logging, stop_on_signals
from zsup.cli.daemonize import pidfile as write_pidfile
from zsup.cli.options import Parser, add_verbosity, bind_address, positive_int
from zsup.lookup.lookupd import LookupApp, TokenFile
from zsup.lookup.registry import DEFAULT_TTL, MAX_TTL, Registry

DEFAULT_BIND = "127.0.0.1:5010"
PROG = "zsup-lookupd"

log = logging.getLogger("zsup.lookupd")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Registry of zsupd nodes: nodes announce themselves "
                                "and their jobs; clients find the nodes running a job or a session.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    add_verbosity(p)
    p.add_argument("--daemon", action="store_true", help="start in the background")
    p.add_argument("--pidfile", metavar="FILE", help="write the server's pid to this file")
    p.add_argument("--bind", action="append", type=bind_address, metavar="ADDRESS",
                   help="serve HTTP here: HOST:PORT, [IPv6]:PORT, PORT or unix:PATH; repeat for several "
                        f"(default: {DEFAULT_BIND})")
    p.add_argument("--backlog", type=positive_int, default=128, metavar="N", help="listen backlog (default: 128)")
    p.add_argument("--certfile", metavar="FILE", help="TLS certificate: serve HTTPS")
    p.add_argument("--keyfile", metavar="FILE", help="TLS key (default: in --certfile)")
    p.add_argument("--cacert", metavar="FILE", help="require client certificates signed by this CA "
                   "(mutual TLS; with --certfile)")
    p.add_argument("--etcd", metavar="URL", help="serve the fleet registry kept in etcd: "
                   "etcd://HOST:PORT[,HOST:PORT...] (default: in memory)")
    p.add_argument("--etcd-cacert", metavar="FILE", help="CA of etcd's certificate (https)")
    p.add_argument("--etcd-cert", metavar="FILE", help="client certificate for etcd")
    p.add_argument("--etcd-key", metavar="FILE", help="client key for etcd")
    p.add_argument("--etcd-user", metavar="NAME", help="etcd user (password from $ZSUP_ETCD_PASSWORD)")
    p.add_argument("--ttl", type=float, default=DEFAULT_TTL,
                   help=f"seconds a node stays without a heartbeat, unless it asks for its own ttl "
                        f"(default: {DEFAULT_TTL:g})")
    p.add_argument("--tokens-file", metavar="FILE", help="bearer tokens, one per line: required to register (and to "
                   "read, with --protect-reads)")
    p.add_argument("--protect-reads", action="store_true", help="require a token for reads too")
    return p


class UsageError(Exception):
    pass


def build_server(args):
    """The HTTPServer and its registry, checked but not started; UsageError says what is wrong."""
    from zsup.http.server import Endpoint, HTTPServer

    if not (0 < args.ttl <= MAX_TTL):
        raise UsageError(f"--ttl must be > 0 and <= {MAX_TTL:g} seconds")
    if args.keyfile and not args.certfile:
        raise UsageError("--keyfile needs --certfile")
    if args.cacert:
        if not args.certfile:
            raise UsageError("--cacert needs --certfile")
        try:
            ssl.create_default_context(cafile=args.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA certificate {args.cacert!r}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    if args.protect_reads and not args.tokens_file:
        raise UsageError("--protect-reads needs --tokens-file")
    tokens = None
    if args.tokens_file:
        try:
            tokens = TokenFile(args.tokens_file)
        except OSError as exc:
            raise UsageError(f"cannot read tokens file {args.tokens_file!r}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(str(exc)) from None
    if args.certfile:
        from zsup.http.auth import check_private
        try:  # the private key: in keyfile, or in certfile when there is no keyfile
            check_private(args.keyfile or args.certfile, "TLS key file")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    endpoints = []
    for index, bind in enumerate(args.bind or [DEFAULT_BIND]):
        try:
            endpoints.append(Endpoint(name=f"lookupd{index}", bind=bind, backlog=args.backlog,
                                      certfile=args.certfile, keyfile=args.keyfile, cacert=args.cacert))
        except ValueError as exc:
            raise UsageError(str(exc).replace(f"endpoint 'lookupd{index}': ", "--bind: ")) from None
    registry = etcd_registry(args) if args.etcd else Registry(default_ttl=args.ttl)
    app = LookupApp(registry, tokens, protect_reads=args.protect_reads)
    # 4 threads for requests, and one per open GET /watch feed
    server = HTTPServer(app, endpoints, websocket_routes=None, threads=4 + registry.changes.max_feeds,
                        adjustments={"ident": PROG, "channel_timeout": 30})
    return server, registry


def etcd_registry(args):
    from zsup.lookup.etcd import EtcdClient, parse_etcd_urls
    from zsup.lookup.etcd_registry import EtcdRegistry

    try:
        urls = parse_etcd_urls(args.etcd, tls=bool(args.etcd_cacert or args.etcd_cert))
        client = EtcdClient(urls, cacert=args.etcd_cacert, cert=args.etcd_cert, key=args.etcd_key,
                            user=args.etcd_user, password=os.environ.get("ZSUP_ETCD_PASSWORD"))
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise UsageError(f"--etcd: {getattr(exc, 'strerror', None) or exc}") from None
    return EtcdRegistry(client, default_ttl=args.ttl)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server, registry = build_server(args)
    except (UsageError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    pidfile = os.path.abspath(args.pidfile) if args.pidfile else None
    if args.daemon:
        daemonize()
    setup_logging(args.verbose, None)
    stop = stop_on_signals()
    try:
        server.start()
    except (OSError, ValueError) as exc:
        message = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or str(exc)
        message = re.sub(r"endpoint 'lookupd[0-9]+'[: ]*", "", message)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    try:
        if hasattr(registry, "start") and not registry.start(wait=5.0):
            log.warning("etcd %s does not answer yet: reads answer 503 until it does", args.etcd)
        with write_pidfile(pidfile):
            serve(server, args, stop)
        return 0
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if hasattr(registry, "stop"):
            registry.stop()  # ends the watch feeds, so the server's workers finish
        else:
            registry.changes.close()
        server.stop()


def serve(server, args, stop: threading.Event) -> None:
    for address in server.addresses:
        scheme = "https" if args.certfile else "http"
        where = str(address) if address.is_unix else f"{scheme}://{address}"
        log.info("%s %s listening on %s (ttl %gs%s%s)", PROG, __version__, where, args.ttl,
                 ", tokens required" if args.tokens_file else "",
                 f", registry in etcd {args.etcd}" if args.etcd else "")
    while not stop.wait(1.0):
        pass
    log.info("%s stopping", PROG)


if __name__ == "__main__":
    sys.exit(main())
