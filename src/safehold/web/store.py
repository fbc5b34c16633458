"""The console's own SQLite database in the state directory: accounts, sessions and the audit log.

Passwords are stored as argon2 hashes; session tokens only as SHA-256 digests, so a copy of the
database lets nobody log in.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from safehold.errors import ConfigError, SafeholdError
from safehold.history import DAMAGED

ROLES = ("viewer", "operator")
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 10
NAME_MAX = 100
DB_NAME = "web.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
                                  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
                                     expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, user TEXT NOT NULL,
                                  address TEXT, action TEXT NOT NULL, target TEXT, result TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Session:
    """A logged-in user as the pages see them."""

    user: str
    role: str
    csrf: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _store_error(path: Path, exc: Exception) -> SafeholdError:
    if isinstance(exc, sqlite3.DatabaseError) and DAMAGED.search(str(exc)):
        return SafeholdError(f"the console's account database {path} is damaged ({exc})",
                             "move it aside and add the accounts again with `safehold user add`; recovery points "
                             "are not affected")
    return SafeholdError(f"cannot open the console's account database {path}: {exc}",
                         "check that settings.state_dir is writable by this user")


class Store:
    """Accounts, sessions and audit rows; safe to share between request threads."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / DB_NAME
        try:
            if not self.path.exists():
                # Created 0600 before SQLite opens it: the file holds password hashes.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            # Unlike the run history, accounts cannot be recreated here: an admin has to decide.
            raise _store_error(self.path, exc) from None
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()
        # Verified against when the user does not exist, so timing does not reveal account names.
        self._dummy = self._hasher.hash(secrets.token_hex(8))

    def _query(self, sql: str, *args: object) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add_user(self, name: str, role: str, password: str, replace: bool = False) -> None:
        """Create (or with `replace`, reset) an account."""
        # A name is typed at the login and into `user remove`, and printed one per line by `user list`.
        if not name or name != name.strip() or not name.isprintable():
            raise ConfigError(f"user name {name!r} is empty, has spaces at either end or a control character",
                              "give a name of printable characters, e.g. alice or a.smith@example.org")
        if len(name) > NAME_MAX:  # the login cuts longer names, so such an account could never log in
            raise ConfigError(f"user name {name[:20]}... has {len(name)} characters, more than {NAME_MAX}",
                              "give a shorter name")
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not known", "use viewer or operator")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"the password is shorter than {MIN_PASSWORD} characters", "choose a longer one")
        if not replace and self._query("SELECT 1 FROM users WHERE name = ?", name):
            raise ConfigError(f"user {name} already exists", "add --replace to set a new password and role")
        self._query("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)", name, role, self._hasher.hash(password),
                    time.time())
        self._query("DELETE FROM sessions WHERE user = ?", name)

    def remove_user(self, name: str) -> None:
        """Delete an account; its open sessions end with it."""
        if not self._query("SELECT 1 FROM users WHERE name = ?", name):
            raise ConfigError(f"user {name} does not exist", "see `safehold user list`")
        self._query("DELETE FROM sessions WHERE user = ?", name)
        self._query("DELETE FROM users WHERE name = ?", name)

    def users(self) -> list[dict[str, object]]:
        """Account names and roles (never hashes)."""
        return [{"name": n, "role": r} for n, r in self._query("SELECT name, role FROM users ORDER BY name")]

    def role(self, name: str) -> str | None:
        """The role of an account, or None when it does not exist."""
        rows = self._query("SELECT role FROM users WHERE name = ?", name)
        return rows[0][0] if rows else None

    def check_password(self, name: str, password: str) -> bool:
        """True when the account exists and the password matches."""
        rows = self._query("SELECT hash FROM users WHERE name = ?", name)
        try:
            return self._hasher.verify(rows[0][0] if rows else self._dummy, password) and bool(rows)
        except (VerificationError, InvalidHashError):
            return False

    def open_session(self, name: str) -> str:
        """A new session token for `name` (the cookie value)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._query("DELETE FROM sessions WHERE expires < ?", now)
        self._query("INSERT INTO sessions VALUES (?, ?, ?, ?)", _digest(token), name, secrets.token_urlsafe(32),
                    now + SESSION_SECONDS)
        return token

    def session(self, token: str) -> Session | None:
        """The live session behind a cookie value, if any."""
        rows = self._query("SELECT s.user, u.role, s.csrf FROM sessions s JOIN users u ON u.name = s.user "
                           "WHERE s.digest = ? AND s.expires > ?", _digest(token), time.time())
        return Session(*rows[0]) if rows else None

    def close_session(self, token: str) -> None:
        """Log out."""
        self._query("DELETE FROM sessions WHERE digest = ?", _digest(token))

    def audit(self, user: str, address: str | None, action: str, target: str, result: str) -> None:
        """Record who did what to which instance, and how it ended."""
        self._query("INSERT INTO audit (time, user, address, action, target, result) VALUES (?, ?, ?, ?, ?, ?)",
                    time.time(), user, address, action, target, result)

    def audit_rows(self, limit: int = 200) -> list[dict[str, object]]:
        """Newest audit rows first."""
        rows = self._query("SELECT time, user, address, action, target, result FROM audit ORDER BY id DESC LIMIT ?",
                           limit)
        keys = ("time", "user", "address", "action", "target", "result")
        return [dict(zip(keys, row, strict=True)) for row in rows]
