"""The types and defaults of the config file's [zsup] and [endpoint:NAME] sections.

They are declared as configobj configspecs (SETTINGS_SPEC, ENDPOINT_SPEC), and checked with
configobj's validate.Validator, given the checks below (`validator(base_dir)`). A check takes
the value as written (or as given on the command line) and returns it converted, or raises
`Invalid(reason)`, where the reason is what follows `[section] key:` in a ConfigError. An
empty value means "not set" (None: the spec's default applies), except where a check says
otherwise: a bool reads "" as false, a list as empty, and `bind` and a required integer
refuse it.

Defaults that depend on state_dir (the sockets, plugin_dir, log_dir) are None here and filled
in by zsup.daemon.config once state_dir is known. [process:...] sections are not declared
here: their keys and checks are JobSpec's (zsup.core.jobspec), shared with the `load` command.
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit

from configobj import ConfigObj
from configobj.validate import ValidateError, Validator

from zsup.bus.parse import parse_size
from zsup.core.jobspec import split_job_name, to_bool, to_list, to_number
from zsup.errors import BadRequest

SETTINGS_SPEC = ConfigObj("""
http_endpoints = names(default=list())
plugin_dir = path(default=None)             # <state_dir>/plugins
state_dir = path(default=None)              # zsup.paths.default_state_dir(): $ZSUP_STATE_DIR or ~/.zsup
bus = zmq(default=None)                     # ipc://<state_dir>/zsupd.sock
pub = zmq(default=None)                     # ipc://<state_dir>/zsupd-pub.sock
bus_tcp = tcp(default=None)
pub_tcp = tcp(default=None)
curve_secret_key_file = file(default=None)
curve_public_key_file = file(default=None)
curve_authorized_keys = dir(default=None)
insecure_tcp = bool(default=False)
log = bool(default=True)
log_dir = path(default=None)                # <state_dir>/logs
log_max_bytes = size(default=10M)
log_backups = integer(min=0, default=10)
log_format = choice(text, json, default=text)
log_rotate = rotation(default=none)
log_target = choice(files, journal, syslog, default=files)  # job output: docs/logs.md
journal_socket = path(default=None)         # /run/systemd/journal/socket
syslog_address = syslog(default=/dev/log)   # a unix socket path, or HOST:PORT (UDP)
exit_with = job(default=None)               # zsupd exits with this job's status (docs/systemd.md)
ring_size = integer(min=1, default=1000)
max_processes_total = integer(min=1, default=10000)  # wanted processes of all jobs together
max_request_size = size(default=1M)         # bigger: bad_request; 4 times bigger: dropped unread (docs/bus.md)
ring_max_bytes = size(default=4M)          # and bytes kept per output stream (docs/logs.md)
pidfile = path(default=None)
webhook_timeout = seconds(default=5.0)
webhook_queue = integer(min=1, default=1000)
task_output_limit = size(default=1M)        # output bytes kept per task (docs/tasks.md)
agent_max_download = size(default=100M)     # agent archives (docs/agent.md)
agent_max_unpacked = size(default=500M)
agent_max_setups = integer(min=1, default=4)  # setups at once; more wait, up to agent_max_queued
agent_max_queued = integer(min=0, default=16)
agent_download_deadline = seconds(default=300.0)  # a whole download, not one read
agent_disk_budget = size(default=2G)        # bytes under <state_dir>/agent, all apps
lookupd_addresses = urls(default=list())    # zsup-lookupd servers to register with (docs/lookupd.md)
lookupd_token_file = file(default=None)     # bearer token sent to them (first non-comment line)
node_name = string(default=None)            # the name announced to them (default: the host name)
require_key = bool(default=False)           # gaffer's API keys on zsup-http (docs/http.md)
public_url = url(default=None)              # this node's gateway as others reach it (default: derived)
registry = etcd(default=list())             # etcd://HOST:PORT[,HOST:PORT]: register there (docs/fleet.md)
registry_ttl = seconds(default=10)          # the lease: a dead node is gone this long after it died
registry_cacert = file(default=None)        # CA of etcd's certificate (https)
registry_cert = file(default=None)          # client certificate and key, when etcd wants them
registry_key = file(default=None)
registry_user = string(default=None)        # etcd's user and password, when auth is enabled
registry_password = string(default=None)
""".splitlines(), list_values=False, interpolation=False)

ENDPOINT_SPEC = ConfigObj("""
bind = bind(default=127.0.0.1:5000)
certfile = file(default=None)
keyfile = file(default=None)
cacert = file(default=None)                 # client certificates signed by it required (mutual TLS)
backlog = integer(min=1, required=True, default=1024)
auth_file = file(default=None)
tokens_file = file(default=None)
header_timeout = seconds(default=None)             # zsup-http's limits (docs/http.md, Limits):
max_client_connections = integer(min=1, default=None)
max_websockets = integer(min=1, default=None)
""".splitlines(), list_values=False, interpolation=False)
#: Endpoint keys left out of the endpoint's dict when not set: zsup-http's defaults apply.
ENDPOINT_OPTIONAL = ("cacert", "header_timeout", "max_client_connections", "max_websockets")



class Invalid(ValidateError):
    """A value a check refuses; str() is the reason, without the key."""


def _reason(exc: BadRequest) -> Invalid:
    """The shared converters say "key: reason"; the config names the key itself."""
    return Invalid(exc.message.partition(": ")[2] or exc.message)


def _converter(convert: Callable) -> Callable:
    def check(value, *args, **kwargs):
        try:
            return convert(value, *args, **kwargs)
        except BadRequest as exc:
            raise _reason(exc) from None
    return check


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise Invalid(f"expected an http(s)://HOST[:PORT] URL, got {value!r}")
    return value.rstrip("/")


def _integer(value, min=None, required=False):
    if _blank(value) and not required:
        return None
    return to_number("value", value.strip() if isinstance(value, str) else value, int,
                     None if min is None else int(min))


def _seconds(value):
    if _blank(value):
        return None
    number = to_number("value", value.strip() if isinstance(value, str) else value, float, 0)
    if number <= 0:
        raise Invalid(f"must be > 0, got {value!r}")
    return number


def _choice(value, *options):
    if _blank(value):
        return None
    value = value.strip()
    if value not in options:
        raise Invalid(f"expected {', '.join(options[:-1])} or {options[-1]}, got {value!r}")
    return value


def _rotation(value):
    rotate = _choice(value, "daily", "hourly", "none")
    return None if rotate == "none" else rotate


def _endpoint(value, schemes):
    if _blank(value):
        return None
    value = str(value).strip()
    if not value.startswith(schemes) or len(value) <= 6:
        raise Invalid(f"expected a {' or '.join(schemes)} endpoint, got {value!r}")
    return value


def _syslog(value):
    """A unix socket path or HOST:PORT."""
    if _blank(value):
        return None
    value = str(value).strip()
    host, _, port = value.rpartition(":")
    if not value.startswith("/") and not (host and port.isdigit() and int(port) <= 65535):
        raise Invalid(f"expected a socket path or HOST:PORT, got {value!r}")
    return value


def _optional(check: Callable) -> Callable:
    return lambda value: None if _blank(value) else check(str(value).strip())


def _etcd_urls(value):
    if _blank(value) or value == []:
        return []  # before the import: http.client and ssl cost every start without a registry
    from zsup.lookup.etcd import parse_etcd_urls  # checks the form only; no client is made

    try:
        parse_etcd_urls(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return ",".join(value) if isinstance(value, (list, tuple)) else str(value).strip()


def validator(base_dir: str) -> Validator:
    """A Validator that knows zsup's checks; relative paths are resolved against base_dir."""

    def resolve(value: str) -> str:
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))

    def path(value, kind="path"):
        if _blank(value):
            return None
        resolved = resolve(str(value).strip())
        if kind == "file" and not os.path.isfile(resolved):
            raise Invalid(f"no such file {resolved!r}")
        if kind == "dir" and not os.path.isdir(resolved):
            raise Invalid(f"no such directory {resolved!r}")
        return resolved

    def bind(value):
        """HOST:PORT (an IPv6 host in brackets) or unix:PATH."""
        value = value.strip()
        if value.startswith("unix:") and len(value) > 5:
            return "unix:" + resolve(value[5:])
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise Invalid(f"expected HOST:PORT or unix:PATH, got {value!r}")
        return value

    return Validator({
        "names": _converter(lambda value: to_list("value", value)),
        "urls": _converter(lambda value: [check_url(url) for url in to_list("value", value)]),
        "bool": _converter(lambda value: to_bool("value", value)),
        "path": path,
        "file": lambda value: path(value, "file"),
        "dir": lambda value: path(value, "dir"),
        "string": _optional(str),
        "url": _optional(check_url),
        "zmq": lambda value: _endpoint(value, ("ipc://", "tcp://")),
        "tcp": lambda value: _endpoint(value, ("tcp://",)),
        "size": _optional(_converter(lambda value: parse_size("value", value))),
        "integer": _converter(_integer),
        "seconds": _converter(_seconds),
        "choice": _choice,
        "rotation": _rotation,
        "syslog": _syslog,
        "job": _optional(_converter(lambda value: ".".join(split_job_name(value)))),
        "bind": bind,
        "etcd": _etcd_urls,
    })
