"""CURVE keys for a tcp bus: making them, loading them, putting them on sockets.

A tcp bus is reachable by anyone on the network, so zsupd binds one only with CURVE: traffic
is encrypted, and with an `authorized_keys_dir` only clients whose public key sits in that
directory get in. Keys are ZeroMQ certificate files (zmq.auth's format, Z85 text), so keys made
by other ZeroMQ tools work too.

Curve settings are plain dicts, so they can come straight from a config file:
  server: {"secret_key", "public_key", "authorized_keys_dir": DIR or None}
          (None lets any client that knows the server's public key in: encrypted, not
          authenticated); or {"insecure": True} for a loopback-only bus without CURVE.
  client: {"secret_key", "public_key", "server_key"}
Keys are Z85 strings or bytes (40 characters).
"""

from __future__ import annotations

import os

import zmq

from zsup.errors import ZsupError


def generate_keypair(directory: str, name: str) -> tuple[str, str]:
    """Write `<name>.key` (public) and `<name>.key_secret` in `directory`; return both paths.

    The directory is created 0700 and the secret file made 0600. Give the server its own
    directory: an `authorized_keys_dir` trusts every `*.key` file in it.
    """
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    import zmq.auth  # imported when used: it pulls in asyncio, a few MB zsupd rarely needs

    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return str(public_file), str(secret_file)


def load_keys(path: str) -> tuple[bytes, bytes | None]:
    """(public, secret) keys from a certificate file; secret is None for a public `.key` file."""
    try:
        import zmq.auth

        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ZsupError(f"cannot load CURVE keys from {path}: {exc}") from None


def server_curve(secret_file: str, authorized_keys_dir: str | None = None) -> dict:
    """A BusServer `curve` dict from the server's secret certificate file."""
    public, secret = load_keys(secret_file)
    if secret is None:
        raise ZsupError(f"{secret_file} holds no secret key (use the .key_secret file)")
    return {"public_key": public, "secret_key": secret, "authorized_keys_dir": authorized_keys_dir}


def client_curve(secret_file: str, server_public_file: str) -> dict:
    """A Client/Subscriber `curve` dict from the client's secret and the server's public file."""
    public, secret = load_keys(secret_file)
    if secret is None:
        raise ZsupError(f"{secret_file} holds no secret key (use the .key_secret file)")
    server_public, _ = load_keys(server_public_file)
    return {"public_key": public, "secret_key": secret, "server_key": server_public}


def _key(curve: dict, field: str) -> bytes:
    value = curve.get(field)
    if isinstance(value, str):
        value = value.encode("ascii")
    if not isinstance(value, bytes) or len(value) != 40:
        raise ZsupError(f"CURVE '{field}' must be a 40-character Z85 key")
    return value


def configure_server_socket(sock: zmq.Socket, curve: dict) -> None:
    """Make `sock` a CURVE server with the given keys (call before bind)."""
    sock.curve_secretkey = _key(curve, "secret_key")
    sock.curve_publickey = _key(curve, "public_key")
    sock.curve_server = True


def configure_client_socket(sock: zmq.Socket, curve: dict) -> None:
    """Make `sock` a CURVE client of the server whose public key is `server_key`."""
    sock.curve_secretkey = _key(curve, "secret_key")
    sock.curve_publickey = _key(curve, "public_key")
    sock.curve_serverkey = _key(curve, "server_key")


def start_authenticator(context: zmq.Context, authorized_keys_dir: str | None):
    """Start the ZAP handler that decides which CURVE clients get in.

    Keys in `authorized_keys_dir` are read once, here: adding a client key means restarting
    the bus (or building a new authenticator).
    """
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if authorized_keys_dir is not None and not os.path.isdir(authorized_keys_dir):
        raise ZsupError(f"CURVE authorized_keys_dir {authorized_keys_dir} is not a directory")
    auth = ThreadAuthenticator(context)
    auth.start()
    location = authorized_keys_dir if authorized_keys_dir is not None else zmq.auth.CURVE_ALLOW_ANY
    auth.configure_curve(domain="*", location=location)
    return auth
