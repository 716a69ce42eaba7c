"""API keys, per-key call quotas and usage, in one SQLite file shared by every server process.

Why these choices:

* **Only a hash is stored.** A key is 256 random bits (``pg-`` + 43 url-safe characters); the file
  keeps its sha256. A slow password hash (bcrypt, scrypt) protects *low-entropy* secrets from
  guessing; against a 256-bit random key guessing is hopeless whatever the hash costs, so a fast
  hash loses nothing and keeps authenticating every request cheap. A leaked file reveals no key.
* **Constant-time check.** The presented key's hash finds the row (an index lookup whose timing can
  only depend on the hash of the guess, which tells an attacker nothing about any real key), then
  :func:`hmac.compare_digest` compares the stored and computed digests.
* **Atomic, persisted charging.** :meth:`KeyStore.reserve` is one ``BEGIN IMMEDIATE`` transaction
  whose ``UPDATE ... WHERE quota IS NULL OR calls + n <= quota`` either charges all ``n`` calls or
  none, whichever thread or process asks; it is committed before the model runs, so a crash or
  restart never loses usage, and a server that fails to score gives the calls back with
  :meth:`KeyStore.refund`. WAL mode lets readers (``/v1/usage``) proceed during writes.
* Keys are never logged or stored in plain text; only :meth:`KeyStore.add` returns one, once.
* **A bad file is refused whole.** Opening checks the file before anything is written: a file that
  is not SQLite, is damaged (``PRAGMA quick_check``), holds other tables but no ``keys`` table (a
  wrong ``--keys`` path must not get our table added) or a ``keys`` table of another shape raises
  one :class:`~promptgym.errors.ConfigError`, never a traceback halfway through serving.
* **A lock held too long is "busy", not a fault.** A write that waited ``busy_timeout_s`` for another
  process's lock raises :class:`~promptgym.errors.KeyStoreBusyError` with nothing charged: the
  server answers 503 + ``Retry-After`` and clients retry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from promptgym.errors import ConfigError, KeyStoreBusyError

KEY_PREFIX = "pg-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    key_sha256 BLOB NOT NULL UNIQUE,
    quota INTEGER,               -- most calls this key may make; NULL: no limit
    calls INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,  -- HTTP requests that were charged (a request may carry many calls)
    created REAL NOT NULL,
    last_used REAL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""
_COLUMNS = ("name", "key_sha256", "quota", "calls", "requests", "created", "last_used", "revoked")


@dataclass(frozen=True)
class KeyRecord:
    """What the store knows about a key (never the key itself)."""

    name: str
    quota: int | None
    calls: int
    requests: int
    created: float
    last_used: float | None
    revoked: bool

    @property
    def remaining(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.calls)

    def usage(self) -> dict:
        """The ``/v1/usage`` body (see :class:`promptgym.lm.wire.Usage`)."""
        return {"key": self.name, "calls": self.calls, "quota": self.quota, "remaining": self.remaining}


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyStore:
    """Keys, quotas and usage in the SQLite file ``path`` (created on first use, WAL mode).

    Safe to share between threads (one connection per thread) and processes (SQLite locking).
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"key store {self.path} is a directory; give a file path such as keys.db")
        if not self.path.parent.exists():
            raise ConfigError(f"folder {self.path.parent} of the key store does not exist")
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            with self._tx() as db:
                self._check_file(db)
            self._db().execute("PRAGMA journal_mode=WAL")  # only now: a refused file is left as it was
        except sqlite3.DatabaseError as e:
            self.close()
            raise ConfigError(f"{self.path} is not a usable key store ({e}); give the file made by "
                              "`promptgym keys add`, or a new path") from None
        except BaseException:
            self.close()
            raise

    def _check_file(self, db: sqlite3.Connection) -> None:
        """Create the table in a new (empty) file; refuse a damaged file or one of another program."""
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise ConfigError(f"key store {self.path} is damaged (SQLite quick_check: {check and check[0]!r}); "
                              "restore it from a backup")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "keys" not in tables:
            if tables:
                raise ConfigError(f"{self.path} is an SQLite file of something else (tables: "
                                  f"{', '.join(sorted(tables)[:5])}), not a promptgym key store")
            db.execute(_SCHEMA)
            return
        columns = {r[1] for r in db.execute("PRAGMA table_info(keys)")}
        missing = [c for c in _COLUMNS if c not in columns]
        if missing:
            raise ConfigError(f"{self.path} has a 'keys' table without the columns {', '.join(missing)}: "
                              "not a promptgym key store")

    # ---------------------------------------------------------------- connections
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
                # WAL is a property of the file, set once it passed the checks (__init__)
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            except sqlite3.DatabaseError as e:
                raise ConfigError(f"cannot open key store {self.path}: {e}") from None
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before any read (``BEGIN IMMEDIATE``): no lost updates.

        A lock that outlasts ``busy_timeout_s`` raises :class:`KeyStoreBusyError` (nothing written).
        """
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._busy(e) from None
        try:
            yield db
        except BaseException:
            with suppress(sqlite3.Error):  # a damaged file may refuse even this; the error below says why
                db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self._busy(e) from None

    def _busy(self, error: sqlite3.OperationalError) -> Exception:
        """``KeyStoreBusyError`` for SQLite's "locked"/"busy", else the error itself."""
        text = str(error).lower()
        if "locked" in text or "busy" in text:
            return KeyStoreBusyError(f"key store {self.path} stayed locked by another process for "
                                     f"{self.busy_timeout_s:g} s; nothing was changed, retry later")
        return error

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the store's file, for the tables other modules keep beside the keys
        (:mod:`promptgym.serve.receipts`): the same locking, busy timeout and rollback as the key table's."""
        with self._tx() as db:
            yield db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                with suppress(sqlite3.Error):
                    db.close()
            self._all.clear()
        self._local = threading.local()

    # ---------------------------------------------------------------- administration
    def add(self, name: str, calls: int | None) -> str:
        """Create key ``name`` with a quota of ``calls`` (None: unlimited); returns the key, the only time it exists."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"key name must be 1-64 characters of letters, digits and _.@- (starting with a letter "
                              f"or digit), got {name!r}")
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 0):
            raise ConfigError(f"--calls must be an integer >= 0, got {calls!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone():
                raise ConfigError(f"a key named {name!r} exists already (revoke it or choose another name)")
            db.execute("INSERT INTO keys (name, key_sha256, quota, created) VALUES (?, ?, ?, ?)",
                       (name, hash_key(key), calls, time.time()))
        return key

    def revoke(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("UPDATE keys SET revoked = 1 WHERE name = ?", (name,)).rowcount != 1:
                raise ConfigError(f"no key named {name!r} in {self.path}")

    def records(self) -> list[KeyRecord]:
        rows = self._db().execute("SELECT name, quota, calls, requests, created, last_used, revoked FROM keys "
                                  "ORDER BY created").fetchall()
        return [_record(r) for r in rows]

    def get(self, name: str) -> KeyRecord:
        row = self._db().execute("SELECT name, quota, calls, requests, created, last_used, revoked FROM keys "
                                 "WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"no key named {name!r} in {self.path}")
        return _record(row)

    # ---------------------------------------------------------------- serving
    def authenticate(self, key: str) -> str | None:
        """The name of the active key ``key``, or None (unknown, revoked or malformed)."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > 256:
            return None
        digest = hash_key(key)
        row = self._db().execute("SELECT name, key_sha256, revoked FROM keys WHERE key_sha256 = ?",
                                 (digest,)).fetchone()
        if row is None or not hmac.compare_digest(bytes(row[1]), digest) or row[2]:
            return None
        return str(row[0])

    def reserve(self, name: str, n: int) -> bool:
        """Charge ``n`` calls to ``name`` if they all fit its quota (True), else charge nothing (False)."""
        return self.charge(name, n) is not None

    def charge(self, name: str, n: int) -> dict | None:
        """:meth:`reserve`, returning the key's usage right after this charge (None: nothing charged)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._tx() as db:
            cur = db.execute("UPDATE keys SET calls = calls + ?, requests = requests + 1, last_used = ? "
                             "WHERE name = ? AND revoked = 0 AND (quota IS NULL OR calls + ? <= quota)",
                             (n, time.time(), name, n))
            if cur.rowcount != 1:
                return None
            row = db.execute("SELECT name, quota, calls, requests, created, last_used, revoked FROM keys "
                             "WHERE name = ?", (name,)).fetchone()
        return _record(row).usage()

    def refund(self, name: str, n: int) -> None:
        """Give back ``n`` calls reserved for a request the server failed to score."""
        with self._tx() as db:
            db.execute("UPDATE keys SET calls = MAX(0, calls - ?), requests = MAX(0, requests - 1) WHERE name = ?",
                       (n, name))

    def usage(self, name: str) -> dict:
        return self.get(name).usage()

    def key_id(self, name: str) -> str:
        """A public, stable id of key ``name``: 32 hex digits of a hash of its hash, so it names the key in
        receipts without being the key or the digest the server authenticates with."""
        row = self._db().execute("SELECT key_sha256 FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ConfigError(f"no key named {name!r} in {self.path}")
        return hashlib.sha256(b"promptgym key id\0" + bytes(row[0])).hexdigest()[:32]


def _record(row: tuple) -> KeyRecord:
    return KeyRecord(name=row[0], quota=row[1], calls=int(row[2]), requests=int(row[3]), created=float(row[4]),
                     last_used=None if row[5] is None else float(row[5]), revoked=bool(row[6]))
