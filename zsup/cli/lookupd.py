"""zsup-lookupd: the lookup service where zsupd nodes register (gaffer_lookupd's options).

Differences from gaffer_lookupd, on purpose:
- ``--bind`` defaults to 127.0.0.1:5010 (loopback), not 0.0.0.0:5010: exposing the registry
  is a choice; ``--bind`` may be given more than once (HOST:PORT, [IPv6]:PORT, unix:PATH).
- ``--cacert`` is accepted for gaffer's command line and checked (a readable CA bundle, with
  ``--certfile``), but client certificates are not requested: the shared HTTP server
  (zsup.http.server) has no hook for it yet. Nodes trust a lookupd's certificate through their
  system CA store or ``SSL_CERT_FILE``. Use ``--tokens-file`` to keep strangers out.
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
from zsup.lookup.lookupd import DEFAULT_TTL, MAX_TTL, LookupApp, Registry, TokenFile

DEFAULT_BIND = "127.0.0.1:5010"
PROG = "zsup-lookupd"

log = logging.getLogger("zsup.lookupd")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Registry of zsupd nodes: nodes announce themselves "
                                "and their jobs; clients find the nodes running a job or a session.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="verbose mode")
    p.add_argument("--daemon", action="store_true", help="start in the background")
    p.add_argument("--pidfile", help="write the server's pid to this file")
    p.add_argument("--bind", action="append", metavar="ADDRESS",
                   help=f"HTTP binding, HOST:PORT or unix:PATH; repeat for several [default: {DEFAULT_BIND}]")
    p.add_argument("--backlog", type=int, default=128, help="listen backlog [default: 128]")
    p.add_argument("--certfile", help="SSL certificate file (serve HTTPS)")
    p.add_argument("--keyfile", help="SSL key file")
    p.add_argument("--cacert", help="SSL CA certificate; accepted and checked, client certificates are "
                   "not requested (see docs/lookupd.md)")
    p.add_argument("--ttl", type=float, default=DEFAULT_TTL,
                   help=f"seconds a node stays without a heartbeat, unless it asks for its own ttl "
                        f"[default: {DEFAULT_TTL:g}]")
    p.add_argument("--tokens-file", help="bearer tokens, one per line: required to register (and to "
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
    if args.backlog < 1:
        raise UsageError("--backlog must be a positive integer")
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
                                      certfile=args.certfile, keyfile=args.keyfile))
        except ValueError as exc:
            raise UsageError(str(exc).replace(f"endpoint 'lookupd{index}': ", "--bind: ")) from None
    registry = Registry(default_ttl=args.ttl)
    app = LookupApp(registry, tokens, protect_reads=args.protect_reads)
    server = HTTPServer(app, endpoints, websocket_routes=None, threads=4,
                        adjustments={"ident": PROG, "channel_timeout": 30})
    return server, registry


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        server, _ = build_server(args)
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
        with write_pidfile(pidfile):
            serve(server, args, stop)
        return 0
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()


def serve(server, args, stop: threading.Event) -> None:
    for address in server.addresses:
        scheme = "https" if args.certfile else "http"
        where = str(address) if address.is_unix else f"{scheme}://{address}"
        log.info("%s %s listening on %s (ttl %gs%s)", PROG, __version__, where, args.ttl,
                 ", tokens required" if args.tokens_file else "")
    while not stop.wait(1.0):
        pass
    log.info("%s stopping", PROG)


if __name__ == "__main__":
    sys.exit(main())
