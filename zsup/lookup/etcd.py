"""A small client for etcd v3's HTTP/JSON gateway: keys, leases, watches, TLS and auth.

Why not a library (docs/fleet.md): the well-known Python clients either speak gRPC (a large
compiled dependency) or, like etcd3gw, cover the gateway without user/password auth, without
the response header's revision (needed to watch from exactly where a listing stopped) and
with a watch that cannot tell its caller the stream broke. The gateway is plain JSON over
HTTP/1.1, so what zsup needs fits here on the standard library.

``EtcdClient(urls, cacert=None, cert=None, key=None, user=None, password=None)``: every call
tries the endpoints in turn, starting with the last one that answered; ``EtcdError`` when
none does. Thread-safe (a request opens its own connection; the auth token is shared).
Keys and values are ``str`` here and base64 on the wire, as the gateway wants.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from typing import Iterator
from urllib.parse import urlsplit

__all__ = ["EtcdClient", "EtcdError", "LeaseLost", "parse_etcd_urls", "prefix_end"]

TIMEOUT = 5.0


class EtcdError(Exception):
    """etcd could not be reached, or refused a request: one line for people."""


class LeaseLost(EtcdError):
    """The lease expired or was revoked: grant a new one and write the keys again."""


def parse_etcd_urls(value: object, tls: bool = False) -> list[str]:
    """``etcd://h1:2379,h2:2379`` (or a list, as configobj splits commas) -> base URLs.

    ``etcd://`` is http, or https when ``tls`` (a CA or client certificate is configured);
    ``etcds://``, ``http://`` and ``https://`` say it outright. A host without a scheme takes
    the previous one's, so the comma form works. ValueError names what is wrong.
    """
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    out: list[str] = []
    scheme = None
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if "://" in item:
            given, _, rest = item.partition("://")
            scheme = {"etcd": "https" if tls else "http", "etcds": "https",
                      "http": "http", "https": "https"}.get(given.lower())
            if scheme is None:
                raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {item!r}")
        elif scheme is None:
            raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...], got {item!r}")
        else:
            rest = item
        hostport = rest.rstrip("/")
        try:
            parts = urlsplit(f"{scheme}://{hostport}")
            ok = bool(parts.hostname) and parts.path == "" and (parts.port or 2379) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"bad etcd endpoint {item!r}: expected HOST:PORT")
        if parts.port is None:
            hostport += ":2379"
        out.append(f"{scheme}://{hostport}")
    if not out:
        raise ValueError("no etcd endpoint given (etcd://HOST:PORT)")
    return out


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (ASCII prefixes)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode("utf-8", "replace")


class EtcdClient:
    def __init__(self, urls: list[str], cacert: str | None = None, cert: str | None = None,
                 key: str | None = None, user: str | None = None, password: str | None = None,
                 timeout: float = TIMEOUT):
        if not urls:
            raise ValueError("no etcd endpoint")
        self.urls = list(urls)
        self.timeout = timeout
        self.user, self.password = user, password
        if key and not cert:
            raise ValueError("a client key needs its certificate")
        self.ssl_context = None
        if any(u.startswith("https://") for u in self.urls):
            self.ssl_context = ssl.create_default_context(cafile=cacert)
            if cert:
                self.ssl_context.load_cert_chain(cert, key)
        self._token: str | None = None
        self._lock = threading.Lock()
        self._current = 0

    # -- transport

    def _connection(self, url: str, timeout: float | None) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def _open(self, path: str, body: dict, timeout: float | None, auth: bool = True):
        """(connection, response) from the first endpoint that answers, starting with the
        one that answered last; EtcdError if none does or the answer is an error."""
        data = json.dumps(body).encode("utf-8")
        errors = []
        for i in range(len(self.urls)):
            index = (self._current + i) % len(self.urls)
            url = self.urls[index]
            headers = {"Content-Type": "application/json"}
            if auth and self.user:
                headers["Authorization"] = self._auth_token()
            conn = self._connection(url, timeout)
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                errors.append(f"{url}: {getattr(exc, 'strerror', None) or exc}")
                continue
            self._current = index
            if resp.status != 200:
                text = resp.read(65536).decode("utf-8", "replace")
                conn.close()
                try:
                    message = json.loads(text).get("error") or json.loads(text).get("message") or text
                except ValueError:
                    message = text.strip() or resp.reason
                if auth and self.user and "token" in message:
                    self._token = None  # an expired token: the next call logs in again
                if "lease not found" in message:
                    raise LeaseLost(f"etcd {url}: {message}")
                raise EtcdError(f"etcd {url}: HTTP {resp.status}: {message}")
            return conn, resp
        raise EtcdError("no etcd endpoint answers: " + "; ".join(errors))

    def post(self, path: str, body: dict, auth: bool = True) -> dict:
        conn, resp = self._open(path, body, self.timeout, auth)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EtcdError(f"etcd: reading the answer failed: {exc}") from None
        finally:
            conn.close()
        try:
            # a streaming RPC (keepalive) answers JSON lines; the first is the one we asked for
            answer = json.loads(raw.split(b"\n", 1)[0] or b"{}")
        except ValueError:
            raise EtcdError(f"etcd answered something that is not JSON: {raw[:200]!r}") from None
        if isinstance(answer, dict) and "error" in answer and "result" not in answer:
            message = answer["error"].get("message") if isinstance(answer["error"], dict) else answer["error"]
            if "lease not found" in str(message):
                raise LeaseLost(f"etcd: {message}")
            raise EtcdError(f"etcd: {message}")
        return answer

    def _auth_token(self) -> str:
        with self._lock:
            if self._token is None:
                answer = self.post("/v3/auth/authenticate", {"name": self.user, "password": self.password or ""},
                                   auth=False)
                self._token = answer.get("token") or ""
            return self._token

    # -- keys

    def get_prefix(self, prefix: str) -> tuple[int, dict[str, str]]:
        """(revision of the store, {key: value}) for every key under ``prefix``."""
        answer = self.post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        kvs = {_unb64(kv.get("key")): _unb64(kv.get("value")) for kv in answer.get("kvs") or []}
        return int(answer.get("header", {}).get("revision", 0)), kvs

    def put(self, key: str, value: str, lease: int | None = None) -> None:
        body: dict = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.post("/v3/kv/put", body)

    def delete(self, key: str) -> int:
        return int(self.post("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    # -- leases

    def grant(self, ttl: int) -> int:
        answer = self.post("/v3/lease/grant", {"TTL": str(int(ttl))})
        if answer.get("error"):
            raise EtcdError(f"etcd: cannot grant a lease: {answer['error']}")
        return int(answer["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh the lease once; its TTL. LeaseLost when it is gone."""
        answer = self.post("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int((answer.get("result") or answer).get("TTL", 0) or 0)
        if ttl <= 0:
            raise LeaseLost(f"etcd: lease {lease:x} expired")
        return ttl

    def revoke(self, lease: int) -> None:
        try:
            self.post("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseLost:
            pass

    # -- watch

    def watch_prefix(self, prefix: str, start_revision: int) -> "Watch":
        return Watch(self, prefix, start_revision)


class Watch:
    """One watch stream: iterate for ``(kind, key, value, revision)`` with kind ``put`` or
    ``delete``; the iteration ends (EtcdError) when the stream breaks, and ``close()`` from
    another thread ends it at once."""

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int):
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        self._conn, self._resp = client._open("/v3/watch", body, timeout=client.timeout)
        self._closed = False
        # A watch is quiet for as long as nothing changes: no read timeout, but TCP keepalives,
        # so an etcd that vanished without a word (a cut cable) ends the stream within a minute.
        sock = self._conn.sock
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    def __iter__(self) -> Iterator[tuple[str, str, str, int]]:
        try:
            while True:
                line = self._resp.readline()
                if not line:
                    raise EtcdError("the etcd watch stream ended")
                if not line.strip():
                    continue
                result = json.loads(line).get("result")
                if result is None:
                    raise EtcdError(f"the etcd watch failed: {line[:200]!r}")
                if result.get("canceled") or result.get("compact_revision"):
                    raise EtcdError(f"the etcd watch was cancelled: {result.get('cancel_reason', '')}")
                for event in result.get("events") or []:
                    kv = event.get("kv", {})
                    yield (event.get("type", "PUT").lower(), _unb64(kv.get("key")), _unb64(kv.get("value")),
                           int(kv.get("mod_revision", 0)))
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
            # close() from another thread may pull http.client's file away mid-read (an
            # AttributeError inside it): only a watch that was closed ends quietly
            if self._closed:
                return
            if isinstance(exc, AttributeError):
                raise
            raise EtcdError(f"the etcd watch stream broke: {exc}") from None

    def close(self) -> None:
        self._closed = True
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conn.close()
