"""Bus commands for gaffer 0.5's API keys and users (zsup.daemon.gaffer_keys; docs/http.md).

zsup-http calls them for ``/auth``, ``/keys``, ``/users`` and to check an ``X-Api-Key``; the
gateway, not zsupd, decides what a key may do (its permissions come back as stored)."""

from __future__ import annotations

from zsup.daemon.gaffer_keys import GafferKeys
from zsup.daemon.handlers import Handlers

#: These commands' handlers, by name; zsupd adds them to its Dispatcher.
HANDLERS = Handlers()
command = HANDLERS.add


def _keys(d) -> GafferKeys:
    keys = getattr(d, "gaffer_keys", None)
    if keys is None:
        keys = d.gaffer_keys = GafferKeys(d.store)
    return keys


@command
def gaffer_require_key(d) -> bool:
    """Is ``require_key`` on in the config's main section?"""
    return bool(d.settings.get("require_key", False))


@command
def gaffer_key_permissions(d, key: str) -> dict:
    """The permissions of an API key; not_found for an unknown key."""
    return _keys(d).permissions(key)


@command
def gaffer_key_create(d, permissions: dict | None = None, label: str = "",
                      parent: str | None = None) -> dict:
    """A new key: ``{"api_key"}`` (the only time it is shown)."""
    return {"api_key": _keys(d).create_key(permissions, label, parent)}


@command
def gaffer_key_get(d, key: str, include_keys: bool = False) -> dict:
    return _keys(d).get_key(key, include_keys)


@command
def gaffer_key_list(d) -> list:
    return _keys(d).list_keys()


@command
def gaffer_key_delete(d, key: str) -> dict:
    _keys(d).delete_key(key)
    return {"ok": True}


@command
def gaffer_user_create(d, username: str, password: str, user_type: int = 1,
                       key: str | None = None, extra: dict | None = None) -> dict:
    return _keys(d).create_user(username, password, user_type, key, extra)


@command
def gaffer_user_get(d, username: str) -> dict:
    return _keys(d).get_user(username)


@command
def gaffer_user_list(d) -> list:
    return _keys(d).list_users()


@command
def gaffer_user_update(d, username: str, password: str, user_type: int = 1,
                       key: str | None = None, extra: dict | None = None) -> dict:
    return _keys(d).update_user(username, password, user_type, key, extra)


@command
def gaffer_user_delete(d, username: str) -> dict:
    _keys(d).delete_user(username)
    return {"ok": True}


@command
def gaffer_user_password(d, username: str, password: str) -> dict:
    _keys(d).set_password(username, password)
    return {"ok": True}


@command
def gaffer_user_key(d, username: str, key: str) -> dict:
    _keys(d).set_user_key(username, key)
    return {"ok": True}


@command
def gaffer_auth(d, username: str, password: str) -> dict:
    """A new login key for a user: ``{"api_key"}``; not_found for a bad name or password."""
    return {"api_key": _keys(d).authenticate(username, password)}
