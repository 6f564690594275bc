"""gaffer 0.5's API keys and users, kept in zsupd's SQLite store (docs/http.md, "gaffer keys
and users").

A key is a random hex string given out once; only its SHA-256 is stored. Its permissions are
gaffer's: ``{"admin": bool, "create_key": bool, "create_user": bool, "manage": [...],
"write": [...], "read": [...]}``, where a list holds sessions, ``session.job`` names or
``"*"``. A user has a password (PBKDF2-SHA256, salted) and a key; logging in (``auth``) gives
a new key with the user's permissions, a child of the user's key (deleting a key deletes its
children, deleting a user deletes its keys). ``user_type`` 0 is an admin, 1 a plain user.

Used from the bus's control thread only (the Store serialises access anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from zsup.errors import BadRequest, Conflict, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS gaffer_keys (
    hash TEXT PRIMARY KEY,          -- sha256 of the key
    label TEXT NOT NULL,
    permissions TEXT NOT NULL,      -- JSON
    parent TEXT,                    -- hash of the parent key
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gaffer_users (
    username TEXT PRIMARY KEY,
    password TEXT NOT NULL,         -- pbkdf2_sha256$iterations$salt$hash
    user_type INTEGER NOT NULL,
    key TEXT NOT NULL,              -- hash of the user's key
    extra TEXT NOT NULL             -- JSON
);
"""

_PERMISSION_FLAGS = ("admin", "create_key", "create_user")
_PERMISSION_LISTS = ("manage", "write", "read")
_ITERATIONS = 100_000


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_permissions(value) -> dict:
    """gaffer's permissions object, validated; BadRequest otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("permissions: expected an object")
    out = {}
    for name, item in value.items():
        if name in _PERMISSION_FLAGS:
            if not isinstance(item, bool):
                raise BadRequest(f"permissions.{name}: expected true or false")
        elif name in _PERMISSION_LISTS:
            if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
                raise BadRequest(f"permissions.{name}: expected a list of names")
        else:
            raise BadRequest(f"permissions: unknown permission {name!r}")
        out[name] = item
    return out


def _hash_password(password: str) -> str:
    salt = os.urandom(16).hex()
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), _ITERATIONS)
    return f"pbkdf2_sha256${_ITERATIONS}${salt}${digest.hex()}"


def _password_ok(stored: str, password: str) -> bool:
    try:
        _, iterations, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    import hmac  # paid by the first login, not by every zsupd start

    return hmac.compare_digest(got.hex(), digest)


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what}: expected a non-empty string")
    return value


class GafferKeys:
    def __init__(self, store):
        self.store = store
        for statement in SCHEMA.split(";"):
            if statement.strip():
                store.execute(statement)

    # -- keys ---------------------------------------------------------------------------------

    def _row(self, hashed: str):
        row = self.store.execute("SELECT hash, label, permissions, parent FROM gaffer_keys "
                                 "WHERE hash = ?", (hashed,)).fetchone()
        if row is None:
            raise NotFound("no such key")
        return row

    @staticmethod
    def _doc(row, key: str | None = None) -> dict:
        # "key" is gaffer's field; a key is stored hashed, so only its id can fill it
        # unless the caller gave the key itself
        return {"id": row[0][:16], "key": key if key is not None else row[0][:16],
                "label": row[1], "permissions": json.loads(row[2])}

    def create_key(self, permissions=None, label: str = "", parent: str | None = None) -> str:
        """A new key (its only copy is the answer)."""
        permissions = check_permissions(permissions)
        if not isinstance(label, str):
            raise BadRequest("label: expected a string")
        parent_hash = None
        if parent is not None:
            parent_hash = self._row(key_hash(_text(parent, "parent")))[0]
        key = os.urandom(16).hex()  # secrets.token_hex(16), without importing secrets at start
        self.store.execute("INSERT INTO gaffer_keys (hash, label, permissions, parent, created) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (key_hash(key), label, json.dumps(permissions), parent_hash,
                            time.time()))
        return key

    def get_key(self, key: str, include_keys: bool = False) -> dict:
        row = self._row(key_hash(_text(key, "key")))
        doc = self._doc(row, key)
        if include_keys:
            doc["keys"] = [self._doc(r) for r in self.store.execute(
                "SELECT hash, label, permissions, parent FROM gaffer_keys WHERE parent = ?",
                (row[0],))]
        return doc

    def list_keys(self) -> list[dict]:
        return [self._doc(r) for r in self.store.execute(
            "SELECT hash, label, permissions, parent FROM gaffer_keys ORDER BY created")]

    def delete_key(self, key: str) -> None:
        self._delete_hash(self._row(key_hash(_text(key, "key")))[0])

    def _delete_hash(self, hashed: str) -> None:
        children = [r[0] for r in self.store.execute(
            "SELECT hash FROM gaffer_keys WHERE parent = ?", (hashed,))]
        for child in children:
            self._delete_hash(child)
        self.store.execute("DELETE FROM gaffer_keys WHERE hash = ?", (hashed,))

    def permissions(self, key: str) -> dict:
        """The permissions of `key`; NotFound for an unknown key."""
        return json.loads(self._row(key_hash(_text(key, "key")))[2])

    # -- users --------------------------------------------------------------------------------

    def _user(self, username: str):
        row = self.store.execute("SELECT username, password, user_type, key, extra FROM "
                                 "gaffer_users WHERE username = ?",
                                 (_text(username, "username"),)).fetchone()
        if row is None:
            raise NotFound(f"no user {username}")
        return row

    def _user_doc(self, row) -> dict:
        key = self.store.execute("SELECT hash, label, permissions, parent FROM gaffer_keys "
                                 "WHERE hash = ?", (row[3],)).fetchone()
        doc = dict(json.loads(row[4]), username=row[0], user_type=row[2])
        doc["key"] = doc["key_id"] = row[3][:16]  # its id: keys are stored hashed
        doc["permissions"] = json.loads(key[2]) if key else {}
        return doc

    def _user_key(self, username: str, user_type: int, key: str | None) -> str:
        """The hash of the user's key: the given key's, or a new one for its type."""
        if key is not None:
            return self._row(key_hash(_text(key, "key")))[0]
        permissions = {"admin": True} if user_type == 0 else {}
        return key_hash(self.create_key(permissions, label=f"user {username}"))

    def create_user(self, username: str, password: str, user_type: int = 1,
                    key: str | None = None, extra: dict | None = None) -> dict:
        _text(username, "username")
        _text(password, "password")
        if user_type not in (0, 1):
            raise BadRequest("user_type: expected 0 (admin) or 1 (user)")
        if self.store.execute("SELECT 1 FROM gaffer_users WHERE username = ?",
                              (username,)).fetchone():
            raise Conflict(f"user {username} exists")
        hashed = self._user_key(username, user_type, key)
        self.store.execute("INSERT INTO gaffer_users (username, password, user_type, key, extra) "
                           "VALUES (?, ?, ?, ?, ?)", (username, _hash_password(password),
                                                      user_type, hashed, json.dumps(extra or {})))
        return self._user_doc(self._user(username))

    def get_user(self, username: str) -> dict:
        return self._user_doc(self._user(username))

    def list_users(self) -> list[dict]:
        return [self._user_doc(r) for r in self.store.execute(
            "SELECT username, password, user_type, key, extra FROM gaffer_users "
            "ORDER BY username")]

    def update_user(self, username: str, password: str, user_type: int = 1,
                    key: str | None = None, extra: dict | None = None) -> dict:
        row = self._user(username)
        _text(password, "password")
        if user_type not in (0, 1):
            raise BadRequest("user_type: expected 0 (admin) or 1 (user)")
        hashed = self._row(key_hash(_text(key, "key")))[0] if key is not None else row[3]
        self.store.execute("UPDATE gaffer_users SET password = ?, user_type = ?, key = ?, "
                           "extra = ? WHERE username = ?", (_hash_password(password), user_type,
                                                            hashed, json.dumps(extra or {}),
                                                            username))
        return self.get_user(username)

    def set_password(self, username: str, password: str) -> None:
        self._user(username)
        self.store.execute("UPDATE gaffer_users SET password = ? WHERE username = ?",
                           (_hash_password(_text(password, "password")), username))

    def set_user_key(self, username: str, key: str) -> None:
        self._user(username)
        hashed = self._row(key_hash(_text(key, "key")))[0]
        self.store.execute("UPDATE gaffer_users SET key = ? WHERE username = ?", (hashed, username))

    def delete_user(self, username: str) -> None:
        row = self._user(username)
        self.store.execute("DELETE FROM gaffer_users WHERE username = ?", (username,))
        if not self.store.execute("SELECT 1 FROM gaffer_users WHERE key = ?", (row[3],)).fetchone():
            self._delete_hash(row[3])

    def authenticate(self, username: str, password: str) -> str:
        """A new login key with the user's permissions; NotFound for a bad name or password
        (the same error for both)."""
        try:
            row = self._user(username)
        except NotFound:
            row = None
        if row is None or not _password_ok(row[1], password if isinstance(password, str) else ""):
            raise NotFound("bad username or password")
        permissions = json.loads(self._row(row[3])[2])
        key = os.urandom(16).hex()  # secrets.token_hex(16), without importing secrets at start
        self.store.execute("INSERT INTO gaffer_keys (hash, label, permissions, parent, created) "
                           "VALUES (?, ?, ?, ?, ?)", (key_hash(key), f"login {username}",
                                                      json.dumps(permissions), row[3], time.time()))
        return key
