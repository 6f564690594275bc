"""gaffer 0.5's API keys and users on zsup-http: ``/auth``, ``/keys``, ``/users`` and the
``X-Api-Key`` check on every route when zsupd's config says ``require_key = true``.

Keys and users live in zsupd (zsup.daemon.gaffer_keys, over the bus); this module decides what
a key may do, with gaffer's rules (``Permissions``). zsup's own authentication (Basic, bearer)
runs first and still applies; with ``require_key`` off, whoever passed it may manage keys and
users (so they can be set up before the switch), and no key is asked for.

Thread rules: any worker thread; the only shared state is the cached ``require_key`` flag.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time

from zsup.errors import NotFound
from zsup.http.web import HTTPError, read_json

#: where ``enforce`` leaves the request key's Permissions for the routes below
ENVIRON_KEY = "zsup.gaffer_permissions"
_OPEN = {"/", "/ping", "/version", "/openapi.json", "/auth"}


class Permissions:
    """gaffer's permission rules over a permissions object; ``None`` stands for "no key
    needed" (require_key off): everything is allowed."""

    def __init__(self, perms: dict | None):
        self.perms = perms

    def is_admin(self) -> bool:
        return self.perms is None or bool(self.perms.get("admin"))

    def flag(self, name: str) -> bool:
        return self.is_admin() or bool(self.perms.get(name))

    def can(self, kind: str, what: str) -> bool:
        """kind: manage, write or read; what: a session, ``session.job`` or ``*`` (all)."""
        if self.is_admin():
            return True
        kinds = {"manage": ("manage",), "write": ("manage", "write"),
                 "read": ("manage", "write", "read")}[kind]
        for k in kinds:
            names = self.perms.get(k) or []
            if "*" in names or what in names or what.split(".", 1)[0] in names:
                return True
        return False


class KeyCheck:
    """The ``require_key`` switch (asked of zsupd, cached a few seconds) and key lookups."""

    def __init__(self, gate, ttl: float = 2.0):
        self.gate = gate
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: bool | None = None
        self._at = 0.0

    def required(self) -> bool:
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.ttl:
                return self._value
        value = bool(self.gate.call("gaffer_require_key"))
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return value

    def permissions(self, key: str | None) -> Permissions:
        """The permissions of `key` (HTTPError 401 when missing or unknown), or all of them
        when no key is required."""
        if not self.required():
            return Permissions(None)
        if not key:
            raise HTTPError(401, "an API key is required (X-Api-Key)")
        try:
            return Permissions(self.gate.call("gaffer_key_permissions", key=key))
        except NotFound:
            raise HTTPError(401, "unknown API key") from None


def _checker(ctx) -> KeyCheck:
    check = getattr(ctx, "_gaffer_keys", None)
    if check is None:
        check = ctx._gaffer_keys = KeyCheck(ctx.gate)
    return check


def _job_of_pid(gate, pid: str) -> str | None:
    try:
        return gate.call("get_process", pid=int(pid))["job"]
    except NotFound:
        return None  # the route answers 404 itself


def requirement(gate, method: str, path: str) -> tuple[str, str] | None:
    """(kind, what) a key needs for this request, None when any valid key will do (the
    route checks more), ("admin", "") for what only an admin may do."""
    parts = [p for p in path.split("/") if p]
    head = parts[0] if parts else ""
    read = method in ("GET", "HEAD")
    if head in ("keys", "users"):
        return None
    if head in ("sessions", "pids", "watch") or (head in ("jobs", "processes") and len(parts) == 1):
        return ("manage" if not read else "read", "*") if head == "watch" else ("manage", "*")
    if head == "jobs" and len(parts) == 2:
        return ("manage", parts[1])
    if head == "jobs":
        return ("read" if read else "manage", f"{parts[1]}.{parts[2]}")
    if head == "processes" and len(parts) >= 3 and parts[2] == "_pids":
        name = parts[1] if "." in parts[1] else f"default.{parts[1]}"
        return ("read", name)
    pid = parts[0] if head.isdigit() else (parts[1] if head in ("processes", "streams") and
                                           len(parts) > 1 and parts[1].isdigit() else None)
    if pid is not None:
        job = _job_of_pid(gate, pid)
        if job is None:
            return None
        if head == "streams":
            return ("read" if read else "write", job)
        return ("read" if read else "manage", job)
    return ("admin", "")


def enforce(ctx, req, path: str) -> None:
    """Called by the app for every request after zsup's own authentication: with
    ``require_key``, the request's ``X-Api-Key`` must allow it (401 without a valid key, 403
    when the key lacks the right). Leaves the key's Permissions in the environ."""
    if path in _OPEN or sockjs_path(path):  # SockJS channels check their AUTH: frame
        return
    check = _checker(ctx)
    perms = check.permissions(req.headers.get("X-Api-Key"))
    req.environ[ENVIRON_KEY] = perms
    if perms.perms is None:
        return
    need = requirement(ctx.gate, req.method, path)
    if need is None:
        return
    kind, what = need
    allowed = perms.is_admin() if kind == "admin" else perms.can(kind, what)
    if not allowed:
        raise HTTPError(403, f"this API key may not {kind} {what or 'this'}".rstrip())


def sockjs_path(path: str) -> bool:
    from zsup.http.sockjs import is_sockjs_path  # imported late: sockjs needs the routes

    return is_sockjs_path(path)


def websocket_allowed(ctx, path: str, headers) -> bool:
    """zsup's own websockets with ``require_key``: an ``X-Api-Key`` header that can read
    everything. gaffer's (``/channel/websocket``, ``/<pid>/channel``) check their ``AUTH:``
    frame themselves."""
    check = _checker(ctx)
    if not check.required():
        return True
    parts = [p for p in path.split("/") if p]
    if parts == ["channel", "websocket"] or sockjs_path(path) or (len(parts) >= 2 and parts[0].isdigit()
                                             and parts[1] == "channel"):
        return True
    try:
        return check.permissions(headers.get("X-Api-Key")).can("read", "*")
    except HTTPError:
        return False


def _perms(req) -> Permissions:
    return req.environ.get(ENVIRON_KEY) or Permissions(None)


def _flag(req, name: str) -> bool:
    return (req.GET.get(name) or "false").lower() == "true"


def register(route) -> None:
    """Add the routes to a route table's ``route`` decorator (routes_api's gaffer table)."""

    @route("GET", "/auth", "Log in with Basic auth: {\"api_key\"} (gaffer's keys)", tag="keys")
    def auth(ctx, req):
        if not _checker(ctx).required():
            raise HTTPError(404, "API keys are off (require_key = false)")
        header = req.headers.get("Authorization", "")
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        if not header.startswith("Basic ") or not user:
            raise HTTPError(401, "Basic authentication required")
        try:
            return ctx.gate.call("gaffer_auth", username=user, password=password)
        except NotFound:
            raise HTTPError(401, "bad username or password") from None

    @route("GET", "/keys", "Every API key (ids, labels, permissions)", tag="keys")
    def keys(ctx, req):
        if not _perms(req).is_admin():
            raise HTTPError(403, "only an admin key may list keys")
        return {"keys": ctx.gate.call("gaffer_key_list")}

    @route("POST", "/keys", "Create an API key: {\"api_key\"}", tag="keys", status=201,
           body="{\"permissions\", \"label\", \"parent\"} (gaffer's; a given \"key\" is ignored)")
    def create_key(ctx, req):
        perms = _perms(req)
        body = read_json(req, {})
        if not isinstance(body, dict):
            raise HTTPError(400, "body: expected a JSON object")
        if not perms.flag("create_key"):
            raise HTTPError(403, "this API key may not create keys")
        wanted = body.get("permissions") or {}
        if isinstance(wanted, dict) and not perms.is_admin() and (
                wanted.get("admin") or wanted.get("create_key") or wanted.get("create_user")):
            raise HTTPError(403, "only an admin key may give admin or create rights")
        return ctx.gate.call("gaffer_key_create", permissions=wanted,
                             label=body.get("label") or "", parent=body.get("parent"))

    def _own_or_creator(req, key):
        perms = _perms(req)
        if not perms.flag("create_key") and req.headers.get("X-Api-Key") != key:
            raise HTTPError(403, "this API key may not see other keys")

    @route("GET", "/keys/{key}", "One API key (?include_keys=true: its children)", tag="keys")
    def get_key(ctx, req, key):
        _own_or_creator(req, key)
        return ctx.gate.call("gaffer_key_get", key=key, include_keys=_flag(req, "include_keys"))

    @route("DELETE", "/keys/{key}", "Delete an API key and its children", tag="keys")
    def delete_key(ctx, req, key):
        _own_or_creator(req, key)
        return ctx.gate.call("gaffer_key_delete", key=key)

    def _admin_or(req):
        if not _perms(req).flag("create_user"):
            raise HTTPError(403, "this API key may not manage users")

    def _user_body(req, admin_verb: str, named: tuple = ()) -> tuple[dict, dict]:
        """The checked JSON body of a user create/update, and its fields beyond gaffer's own
        (kept as the user's extra data). Only an admin key may give ``user_type`` 0."""
        _admin_or(req)
        body = read_json(req, {})
        if not isinstance(body, dict):
            raise HTTPError(400, "body: expected a JSON object")
        known = named + ("password", "user_type", "key")
        if body.get("user_type") == 0 and not _perms(req).is_admin():
            raise HTTPError(403, f"only an admin key may {admin_verb}")
        return body, {k: v for k, v in body.items() if k not in known}

    @route("GET", "/users", "Every user", tag="keys")
    def users(ctx, req):
        _admin_or(req)
        return {"users": ctx.gate.call("gaffer_user_list")}

    @route("POST", "/users", "Create a user", tag="keys", status=201,
           body="{\"username\", \"password\", \"user_type\" (0 admin, 1 user), \"key\", ...}")
    def create_user(ctx, req):
        body, extra = _user_body(req, "create admins", ("username",))
        return ctx.gate.call("gaffer_user_create", username=body.get("username"),
                             password=body.get("password"), user_type=body.get("user_type", 1),
                             key=body.get("key"), extra=extra)

    @route("GET", "/users/{username}", "One user", tag="keys")
    def get_user(ctx, req, username):
        _admin_or(req)
        return ctx.gate.call("gaffer_user_get", username=username)

    @route("PUT", "/users/{username}", "Update a user", tag="keys",
           body="{\"password\", \"user_type\", \"key\", ...}")
    def update_user(ctx, req, username):
        body, extra = _user_body(req, "make admins")
        return ctx.gate.call("gaffer_user_update", username=username,
                             password=body.get("password"), user_type=body.get("user_type", 1),
                             key=body.get("key"), extra=extra)

    @route("DELETE", "/users/{username}", "Delete a user (and its keys)", tag="keys")
    def delete_user(ctx, req, username):
        _admin_or(req)
        return ctx.gate.call("gaffer_user_delete", username=username)

    @route("PUT", "/users/{username}/password", "Set a user's password", tag="keys",
           body="{\"password\"}")
    def set_password(ctx, req, username):
        _admin_or(req)
        body = read_json(req, {})
        return ctx.gate.call("gaffer_user_password", username=username,
                             password=body.get("password") if isinstance(body, dict) else None)

    @route("PUT", "/users/{username}/key", "Set a user's key", tag="keys", body="{\"key\"}")
    def set_user_key(ctx, req, username):
        _admin_or(req)
        body = read_json(req, {})
        return ctx.gate.call("gaffer_user_key", username=username,
                             key=body.get("key") if isinstance(body, dict) else None)

