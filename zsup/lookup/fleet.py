"""Where the fleet is read from, and how one node is asked something (zsupctl --cluster, the
gateway's /cluster routes).

``Fleet(source)``: ``source`` is a lookupd (``http(s)://HOST:PORT``) or etcd
(``etcd://HOST:PORT[,...]``); ``nodes()`` gives the node documents (name, node_id, urls,
jobs, ...), ``call(node, cmd, args)`` runs a bus command on one node over its HTTP gateway
(``POST /bus/<cmd>``), or over its TCP bus with CURVE keys when it announces no gateway.
Every failure is a ``FleetError`` with one line that says which node and why.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

from zsup.errors import ZsupError
from zsup.lookup.etcd import EtcdClient, EtcdError, parse_etcd_urls

__all__ = ["Fleet", "FleetError", "node_label"]

NODES = "/zsup/nodes/"  # zsup.lookup.etcd_registrar.NODES, without importing the bus


class FleetError(ZsupError):
    """A node or the registry could not answer; ``code`` is the bus error code when a node said no."""

    def __init__(self, message: str, code: str = "unavailable"):
        super().__init__(message)
        self.code = code


def node_label(node: dict) -> str:
    return node.get("name") or node.get("node_id") or "?"


class Fleet:
    def __init__(self, source: str, cacert: str | None = None, cert: str | None = None, key: str | None = None,
                 timeout: float = 5.0, curve: dict | None = None, user: str | None = None,
                 password: str | None = None):
        self.source = source
        self.timeout = timeout
        self.curve = curve
        self.ssl_context = ssl.create_default_context(cafile=cacert)
        if cert:
            self.ssl_context.load_cert_chain(cert, key)
        self.etcd = None
        if not source.startswith(("http://", "https://")):
            self.etcd = EtcdClient(parse_etcd_urls(source, tls=bool(cacert or cert)), cacert=cacert, cert=cert,
                                   key=key, user=user or os.environ.get("ZSUP_ETCD_USER"),
                                   password=password or os.environ.get("ZSUP_ETCD_PASSWORD"), timeout=timeout)
        self.token = os.environ.get("ZSUP_LOOKUPD_TOKEN")

    # -- the registry

    def nodes(self) -> list[dict]:
        """Every registered node, sorted by name."""
        if self.etcd is not None:
            try:
                _, kvs = self.etcd.get_prefix(NODES)
            except EtcdError as exc:
                raise FleetError(str(exc)) from None
            nodes = []
            for value in kvs.values():
                try:
                    doc = json.loads(value)
                except ValueError:
                    continue
                if isinstance(doc, dict) and doc.get("node_id"):
                    nodes.append(doc)
        else:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            nodes = self._http("GET", self.source.rstrip("/") + "/nodes", None, headers, "the lookupd").get("nodes", [])
        return sorted(nodes, key=lambda n: (node_label(n), n.get("node_id", "")))

    # -- one node

    def call(self, node: dict, cmd: str, args: dict | None = None) -> Any:
        """A bus command's result from one node; FleetError if it fails (with the node's code)."""
        urls = node.get("urls") or {}
        if urls.get("http"):
            answer = self._http("POST", f"{urls['http'].rstrip('/')}/bus/{cmd}", args or {}, {}, node_label(node))
            return answer.get("result")
        if urls.get("bus") and self.curve:
            from zsup.bus.client import Client
            from zsup.errors import ZsupError

            try:
                with Client(urls["bus"], timeout=self.timeout, curve=self.curve) as client:
                    return client.request(cmd, args or {})
            except ZsupError as exc:
                raise FleetError(exc.message, exc.code) from None
        raise FleetError("announces no HTTP gateway (and no TCP bus with --curve-key/--server-key)")

    def open(self, node: dict, path: str, timeout: float | None = None):
        """A streaming GET of ``path`` on a node's gateway: the urllib response (caller closes)."""
        base = (node.get("urls") or {}).get("http")
        if not base:
            raise FleetError(f"node {node_label(node)} announces no HTTP gateway")
        req = urllib.request.Request(base.rstrip("/") + path)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout, context=self.ssl_context)
        except urllib.error.HTTPError as exc:
            return exc  # an answer all the same: the caller passes its status and body on
        except (urllib.error.URLError, OSError) as exc:
            raise FleetError(f"cannot reach {base}: {getattr(exc, 'reason', None) or exc}") from None

    def _http(self, method: str, url: str, body: dict | None, headers: dict, who: str) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error") or {}
            except (ValueError, AttributeError):
                error = {}
            raise FleetError(error.get("message") or f"HTTP {exc.code} {exc.reason}",
                             error.get("code") or "unavailable") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FleetError(f"cannot reach {who} at {url.split('/bus/')[0]}: {reason}") from None
        except ValueError:
            raise FleetError(f"{who} answered something that is not JSON") from None
