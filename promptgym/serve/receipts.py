"""Usage receipts, the server's side: the signing key, each key's chain in the key store, the receipt body.

For every call it charges and answers, the server appends one entry to the key's chain (the hashes
and chain rule of :mod:`promptgym.lm.receipts`), in a table of the key store's SQLite file, so the
chain survives restarts and a call is in it exactly when it was charged and answered. A receipt
(:func:`receipt_body`) is signed with the server's Ed25519 key: a PEM file beside the key store,
created on first use, mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promptgym.errors import ConfigError
from promptgym.lm.receipts import RECEIPT_FORMAT, Entry, canonical_json, chain_start, extend, fingerprint, public_pem
from promptgym.serve.keys import KeyStore

#: what a signing key file is called beside its key store (``keys.db`` -> ``keys.db.receipt-key.pem``)
SIGNING_KEY_SUFFIX = ".receipt-key.pem"
_CHAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipt_chain (
    name TEXT NOT NULL,             -- the key's name (keys.name)
    seq INTEGER NOT NULL,           -- 1, 2, ...: the call's place in the key's chain
    prompt_sha256 TEXT NOT NULL,
    rows_sha256 TEXT NOT NULL,
    response_sha256 TEXT NOT NULL,
    head TEXT NOT NULL,             -- the chain's head after this call
    examples INTEGER NOT NULL,      -- rows scored by this call
    at REAL NOT NULL,               -- when it was answered (unix seconds)
    PRIMARY KEY (name, seq)
)
"""


def timestamp(t: float | None) -> str:
    """A receipt's time: UTC, ISO 8601 with milliseconds ("" for a chain without calls)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- signing
def signing_key_path(key_store: str | Path) -> Path:
    """Where the signing key of the server using ``key_store`` lives: beside it."""
    path = Path(key_store)
    return path.with_name(path.name + SIGNING_KEY_SUFFIX)


class ReceiptSigner:
    """The server's Ed25519 key, in a PEM file readable by its owner only (created on first use)."""

    def __init__(self, private_key: Any, path: Path) -> None:
        self._key, self.path = private_key, path
        self.public_key = private_key.public_key()
        self.fingerprint = fingerprint(self.public_key)

    @classmethod
    def load_or_create(cls, path: str | Path) -> ReceiptSigner:
        """The key in ``path``, made there first if absent. Created under a temporary name with mode 0600
        and linked into place, so a crash or a second server starting at once never leaves half a key
        or replaces one; a key file others may read is refused, as ssh does."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        path = Path(path)
        if not path.exists():
            if not path.parent.is_dir():
                raise ConfigError(f"folder {path.parent} of the receipt signing key does not exist")
            pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption())
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                with contextlib.suppress(FileExistsError):  # another process made it first: use that one
                    os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"receipt signing key {path} may be read by others (mode {mode:o}); "
                              f"run `chmod 600 {path}`")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{path} is not a PEM private key; move it away and a new key is made") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(key, path)

    def public_pem(self) -> str:
        return public_pem(self.public_key)

    def sign(self, body: Mapping[str, Any]) -> str:
        return base64.b64encode(self._key.sign(canonical_json(dict(body)))).decode("ascii")


# ---------------------------------------------------------------------------------------------- storage
class ReceiptLog:
    """Every key's chain, in a table of the key store's SQLite file (one transaction per answered job)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        with store.transaction() as db:
            db.execute(_CHAIN_SCHEMA)

    def append(self, name: str, entries: Sequence[Entry]) -> None:
        """Add one job's calls to ``name``'s chain, all or none."""
        if not entries:
            return
        start = chain_start(self.store.key_id(name))
        now = time.time()
        with self.store.transaction() as db:
            row = db.execute("SELECT seq, head FROM receipt_chain WHERE name = ? ORDER BY seq DESC LIMIT 1",
                             (name,)).fetchone()
            seq, head = (0, start) if row is None else (int(row[0]), str(row[1]))
            for e in entries:
                seq += 1
                head = extend(head, [e])
                db.execute("INSERT INTO receipt_chain (name, seq, prompt_sha256, rows_sha256, response_sha256, head, "
                           "examples, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (name, seq, e.prompt_sha256, e.rows_sha256, e.response_sha256, head, int(e.examples), now))

    def summary(self, name: str) -> dict[str, Any]:
        """Calls, examples, first and last call time and head of ``name``'s chain."""
        with self.store.transaction() as db:
            calls, examples, first, last = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(examples), 0), MIN(at), MAX(at) FROM receipt_chain WHERE name = ?",
                (name,)).fetchone()
            row = db.execute("SELECT head FROM receipt_chain WHERE name = ? ORDER BY seq DESC LIMIT 1",
                             (name,)).fetchone()
        head = chain_start(self.store.key_id(name)) if row is None else str(row[0])
        return {"calls": int(calls), "examples": int(examples), "first_call": timestamp(first),
                "last_call": timestamp(last), "head": head}

    def entries(self, name: str, after: int) -> tuple[str, list[Entry]]:
        """The head after the first ``after`` calls of ``name``'s chain, and the entries that follow it."""
        with self.store.transaction() as db:
            row = db.execute("SELECT head FROM receipt_chain WHERE name = ? AND seq = ?", (name, after)).fetchone()
            rows = db.execute("SELECT prompt_sha256, rows_sha256, response_sha256, examples FROM receipt_chain "
                              "WHERE name = ? AND seq > ? ORDER BY seq", (name, after)).fetchall()
        head = chain_start(self.store.key_id(name)) if after == 0 else (None if row is None else str(row[0]))
        if head is None:
            raise ConfigError(f"key {name!r} has fewer than {after} calls in its chain")
        return head, [Entry(str(p), str(r), str(s), int(n)) for p, r, s, n in rows]


def receipt_body(signer: ReceiptSigner, name: str, key_id: str, model: str, model_sha256: str, dtype: str,
                 summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a receipt states (signed as :func:`canonical_json`); strings and integers only, so every
    reader serialises it to the same bytes."""
    return {"format": RECEIPT_FORMAT, "signer": signer.fingerprint, "key": name, "key_id": key_id,
            "model": model, "model_sha256": model_sha256, "dtype": dtype, "calls": int(summary["calls"]),
            "examples": int(summary["examples"]), "first_call": str(summary["first_call"]),
            "last_call": str(summary["last_call"]), "head": str(summary["head"]), "issued": timestamp(time.time())}
