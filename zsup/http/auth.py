"""Who may use the gateway: HTTP Basic against a password file, and bearer API tokens.

Password file (``auth_file``): one ``user:scheme$salt$hash`` line per user; ``#`` lines and
blank lines are skipped. Schemes: ``scrypt`` (n=2**14, r=8, p=1, 32 bytes) and
``pbkdf2_sha256`` (200,000 rounds, 32 bytes); salt and hash are base64. Make a line with
``zsup-http --hash-password USER`` (reads the password from the terminal or stdin) or
``hash_password()`` below.

Tokens file (``tokens_file``): one token per line (``#`` comments allowed), sent as
``Authorization: Bearer TOKEN``; compared in constant time. Because browsers cannot set
headers on ``EventSource`` or ``WebSocket``, a token may also come as the query parameter
``access_token=TOKEN`` (tokens only, never a password; see ``split_access_token()``, which
also takes it out of the query string so nothing downstream sees or logs it).

Both files are re-read when they change (mtime or size), so users and tokens can be added
without a restart. A configured file that cannot be read lets nobody in (and is logged).
Successful password checks are remembered (by a hash of the password) so a browser sending
Basic credentials with every request does not pay for scrypt every time.

Limits, so wrong passwords cannot take the gateway down (docs/http.md, "Limits"):

- At most ``PASSWORD_CHECKS`` password hashes are computed at once (scrypt takes ~16 MiB and
  tens of milliseconds each). A password check beyond that is not queued (a queue would hold
  the server's threads): it raises ``Throttled`` at once, answered 503 with ``Retry-After``.
  Bearer tokens never wait for a slot: they are compared, not hashed.
- Per client address, ``FREE_FAILURES`` wrong passwords in a row are free; each one after
  that blocks that address's password checks for twice as long as the last (1 s, 2 s, 4 s, ...
  at most ``MAX_BLOCK`` s): ``Throttled``, answered 429 with ``Retry-After``, without hashing
  anything. A right password resets the count. Tokens are not blocked (so an address that
  brute-forces passwords does not lock out the programs behind the same address).
- Credential files must not be readable by group or others: ``check_private()`` refuses
  them when the gateway starts (``Authenticator`` calls it for its files).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
import threading
import time
from typing import Mapping
from urllib.parse import unquote_plus

__all__ = ["ACCESS_TOKEN_PARAM", "Authenticator", "Throttled", "check_private", "hash_password",
           "split_access_token", "strip_access_token", "verify_password"]

log = logging.getLogger("zsup.http.auth")

#: The query parameter that may carry an API token (RFC 6750, section 2.3).
ACCESS_TOKEN_PARAM = "access_token"

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
PBKDF2_ROUNDS = 200_000

#: Password hashes computed at once (the machine's cores are the real limit).
PASSWORD_CHECKS = 2
#: Wrong passwords in a row from one address before it is slowed down.
FREE_FAILURES = 10
#: The longest block, in seconds, of an address that keeps failing.
MAX_BLOCK = 60.0
#: Addresses remembered at most (the oldest are forgotten first).
MAX_CLIENTS = 10000


class Throttled(Exception):
    """A password check refused without being made: `status` 429 (this client failed too
    often) or 503 (too many checks at once); `retry_after` in whole seconds."""

    def __init__(self, status: int, message: str, retry_after: int):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def check_private(path: str, what: str) -> None:
    """Refuse (ValueError, one line) a secret file that group or others may read or write.
    A missing file is left to the caller (it may appear later)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{what} {path} is readable or writable by group or others (mode "
                         f"{stat.S_IMODE(mode):04o}): refusing it; run chmod 600 {path}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(scheme: str, password: str, salt: bytes) -> bytes:
    secret = password.encode("utf-8")
    if scheme == "scrypt":
        return hashlib.scrypt(secret, salt=salt, maxmem=64 * 1024 * 1024, **SCRYPT)
    if scheme == "pbkdf2_sha256":
        return hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ROUNDS, 32)
    raise ValueError(f"unknown password scheme {scheme!r}")


def hash_password(password: str, scheme: str = "scrypt") -> str:
    """The ``scheme$salt$hash`` part of a password file line."""
    salt = secrets.token_bytes(16)
    return f"{scheme}${_b64(salt)}${_b64(_derive(scheme, password, salt))}"


def split_access_token(query: str | None) -> tuple[list[str], str]:
    """``(tokens, rest)``: the decoded ``access_token`` values of a raw query string, and the
    query string without them (the other parameters exactly as they were sent)."""
    if not query or ACCESS_TOKEN_PARAM not in unquote_plus(query):
        return [], query or ""
    tokens, kept = [], []
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if unquote_plus(name) == ACCESS_TOKEN_PARAM:
            tokens.append(unquote_plus(value))
        elif piece:
            kept.append(piece)
    return tokens, "&".join(kept)


def strip_access_token(environ: dict) -> list[str]:
    """Take ``access_token`` out of a WSGI environ's query string (and waitress's
    ``REQUEST_URI``) so that no handler, mounted app or log line sees it; returns its values."""
    tokens, rest = split_access_token(environ.get("QUERY_STRING"))
    if tokens:
        environ["QUERY_STRING"] = rest
        for key in ("REQUEST_URI", "RAW_URI"):
            uri = environ.get(key)
            if isinstance(uri, str) and "?" in uri:
                path, _, query = uri.partition("?")
                kept = split_access_token(query)[1]
                environ[key] = f"{path}?{kept}" if kept else path
    return tokens


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        expected = base64.b64decode(digest, validate=True)
        actual = _derive(scheme, password, base64.b64decode(salt, validate=True))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


class _WatchedFile:
    """A small text file re-read whenever its mtime or size changes."""

    def __init__(self, path: str, parse):
        self.path = path
        self._parse = parse
        self._stamp = None
        self.value = None
        self._lock = threading.Lock()

    def get(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            if self._stamp != "missing":
                log.error("cannot read %s: %s (nobody gets in)", self.path, exc.strerror)
            self._stamp, self.value = "missing", None
            return None
        with self._lock:
            if stamp != self._stamp:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        self.value = self._parse(f.read())
                except (OSError, UnicodeDecodeError) as exc:
                    log.error("cannot read %s: %s (nobody gets in)", self.path, exc)
                    self.value = None
                self._stamp = stamp
            return self.value


def _parse_passwords(text: str) -> dict[str, str]:
    users = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if sep and user:
            users[user] = stored.strip()
    return users


def _parse_tokens(text: str) -> list[bytes]:
    return [line.strip().encode("utf-8") for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


class Authenticator:
    """Checks an ``Authorization`` header against a password file and/or a tokens file."""

    def __init__(self, auth_file: str | None = None, tokens_file: str | None = None):
        self.auth_file = auth_file
        self.tokens_file = tokens_file
        self._passwords = _WatchedFile(auth_file, _parse_passwords) if auth_file else None
        self._tokens = _WatchedFile(tokens_file, _parse_tokens) if tokens_file else None
        self._verified: dict[tuple[str, str, bytes], bool] = {}
        self._verified_lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(PASSWORD_CHECKS)
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (failures, blocked until)
        self._failures_lock = threading.Lock()
        for path, what in ((auth_file, "auth_file"), (tokens_file, "tokens_file")):
            if path:
                check_private(path, what)

    @property
    def enabled(self) -> bool:
        return self._passwords is not None or self._tokens is not None

    @property
    def schemes(self) -> list[str]:
        return (["Basic"] if self._passwords else []) + (["Bearer"] if self._tokens else [])

    def check_headers(self, headers: Mapping[str, str]) -> bool:
        """For HTTPServer's websocket ``authorize`` hook (a throttled check is a no)."""
        try:
            return self.check(headers.get("Authorization") or headers.get("authorization"))
        except Throttled:
            return False

    def check_request(self, authorization: str | None, access_tokens: list[str] = (),
                      client: str = "") -> bool:
        """An ``Authorization`` header or ONE ``access_token`` query value (a bearer token,
        never a password) lets the request in. Two ``access_token`` values are refused.
        Raises ``Throttled`` instead of checking a password (see the module docstring);
        `client` is the address failures are counted for."""
        if not self.enabled:
            return True
        if authorization and self.check(authorization, client):
            return True
        return len(access_tokens) == 1 and self.check_token(access_tokens[0])

    def check_token(self, token: str) -> bool:
        """A bearer token alone (as from ``?access_token=``): only the tokens file counts."""
        if self._tokens is None:
            return False
        return self._check_token(token)

    def check(self, authorization: str | None, client: str = "") -> bool:
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and self._tokens is not None:
            return self._check_token(credentials)
        if scheme == "basic" and self._passwords is not None:
            return self._check_basic(credentials, client)
        return False

    def _check_token(self, token: str) -> bool:
        tokens = self._tokens.get() or []
        given = token.encode("utf-8")
        found = False
        for known in tokens:  # no early exit: the time taken does not say which one matched
            found |= hmac.compare_digest(given, known)
        return found

    def _check_basic(self, credentials: str, client: str) -> bool:
        try:
            user, sep, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (ValueError, binascii.Error):
            return False
        if not sep:
            return False
        # Before anything else, the cached answer included: a blocked client must not be
        # able to test passwords, not even against the cache.
        self._not_blocked(client)
        users = self._passwords.get() or {}
        stored = users.get(user)
        key = (user, stored, hashlib.sha256(password.encode("utf-8")).digest())
        with self._verified_lock:
            if stored is not None and key in self._verified:
                self._failed(client, False)
                return True
        if not self._hashing.acquire(blocking=False):
            raise Throttled(503, f"too many password checks at once ({PASSWORD_CHECKS}); "
                                 "try again in a moment", 1)
        try:
            if stored is None:
                _derive("scrypt", password, b"\0" * 16)  # about the cost of a real check
                ok = False
            else:
                ok = verify_password(password, stored)
        finally:
            self._hashing.release()
        self._failed(client, not ok)
        if not ok:
            return False
        with self._verified_lock:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[key] = True
        return True

    def _not_blocked(self, client: str) -> None:
        with self._failures_lock:
            failures, until = self._failures.get(client, (0, 0.0))
        wait = until - time.monotonic()
        if wait > 0:
            raise Throttled(429, f"too many wrong passwords from {client or 'this client'}; "
                                 f"try again in {int(wait) + 1} s", int(wait) + 1)

    def _failed(self, client: str, failed: bool) -> None:
        """Count a wrong password for `client` (and block it once past FREE_FAILURES), or
        forget its failures after a right one."""
        with self._failures_lock:
            if not failed:
                self._failures.pop(client, None)
                return
            failures = self._failures.pop(client, (0, 0.0))[0] + 1  # re-inserted: newest last
            until = 0.0
            if failures > FREE_FAILURES:
                until = time.monotonic() + min(MAX_BLOCK, 2.0 ** (failures - FREE_FAILURES - 1))
            self._failures[client] = (failures, until)
            while len(self._failures) > MAX_CLIENTS:
                del self._failures[next(iter(self._failures))]
