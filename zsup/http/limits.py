"""What an endpoint allows one client: the limits (docs/http.md, "Limits") and the count of
connections per client address. Bookkeeping only (no socket here): zsup.http.adapter
(accepting) and zsup.http.channel (closing) apply them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_CLIENT_CONNECTIONS", "DEFAULT_MAX_WEBSOCKETS",
           "ClientCap", "Limits"]

logger = logging.getLogger("zsup.http")

#: Seconds for a complete request head, HTTP connections open at once per client IP,
#: websockets open at once (per endpoint).
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CLIENT_CONNECTIONS = 64
DEFAULT_MAX_WEBSOCKETS = 10000  # no thread each (zsup.http.hub): memory and fds bound it


@dataclass(frozen=True)
class Limits:
    """What one endpoint allows a client (docs/http.md, "Limits").

    ``header_timeout``: seconds for a complete request head, counted from the connection's
    opening (after its TLS handshake) or from the first byte of a later request on it; then
    the connection is closed. ``max_client_connections``: HTTP connections open at once from
    one client IP address (TCP endpoints only); more are closed as soon as they are accepted.
    ``max_websockets``: websockets open at once on the endpoint; more are refused with 503.
    """

    name: str = "default"
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_client_connections: int = DEFAULT_MAX_CLIENT_CONNECTIONS
    max_websockets: int = DEFAULT_MAX_WEBSOCKETS


class ClientCap:
    """Connections per client IP of one server, and the "over the cap" log, once per episode.

    An episode starts with a client's first refused connection and lasts while it keeps
    trying: it ends once ``quiet`` seconds pass without a refusal. Only the loop thread uses
    this object.
    """

    def __init__(self, endpoint: str, cap: int, quiet: float = 60.0) -> None:
        self.endpoint, self.cap, self.quiet = endpoint, cap, quiet
        self.open: dict[str, int] = {}
        self.refusing: dict[str, list] = {}  # host -> [last refusal (monotonic), refused]

    def admit(self, host: str) -> bool:
        """Count a new connection of ``host``; False (and not counted) when it is over the cap."""
        count = self.open.get(host, 0)
        if count < self.cap:
            self.open[host] = count + 1
            return True
        now = time.monotonic()
        episode = self.refusing.get(host)
        if episode is None or now - episode[0] > self.quiet:
            if episode is not None:
                logger.info("endpoint %s: %d more connections of %s were refused", self.endpoint,
                            episode[1], host)
            logger.warning("endpoint %s: client %s has %d connections open "
                           "(max_client_connections): closing its new ones (logged once until it "
                           "stops trying for %gs)", self.endpoint, host, count, self.quiet)
            self.refusing[host] = [now, 0]
        else:
            episode[0] = now
            episode[1] += 1
        if len(self.refusing) > 1024:  # many hosts: forget the episodes that ended
            self.refusing = {h: e for h, e in self.refusing.items() if now - e[0] <= self.quiet}
        return False

    def release(self, host: str) -> None:
        count = self.open.get(host, 0) - 1
        if count > 0:
            self.open[host] = count
        else:
            self.open.pop(host, None)
