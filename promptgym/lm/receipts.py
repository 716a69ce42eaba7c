"""Usage receipts: what a server scored for a key, kept as a hash chain and signed on request.

Why: a leaderboard ranks runs "at 1,000 calls", but a run's call count is the submitter's own
harness's word. A server that meters the key can attest it instead. For every call it charges and
answers, ``promptgym serve`` appends one entry to the key's chain, in the key store's SQLite file
(so the chain survives restarts, and a call is in it exactly when it was charged and answered):

* ``prompt_sha256``: the prompt exactly as scored (token ids as int64, or the soft prompt's float32
  values and shape), so anyone holding the prompt recomputes it;
* ``rows_sha256``: the rendered rows and label words it was scored on. The server never sees data
  files, only rendered rows, so this is the data it can vouch for: a verifier renders its own copy
  of a split and compares. (Hashes a client declared would only repeat the client's word);
* ``response_sha256``: the answer sent back.

``head = sha256(previous head || request || response)`` from a start that names the key, so an
entry cannot be dropped, reordered or moved to another key's chain without changing the head. A
receipt (:func:`receipt_body`) states the key's name and public id (never the key), the model's
weights hash and dtype, the calls and examples in the chain, its first and last call times and its
head, signed with the server's Ed25519 key (PEM beside the key store, created on first use, mode
0600). Anyone with the receipt and the entries after a point recomputes the head; the leaderboard's
rules for that are in :mod:`promptgym.bench.receipts`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.errors import ConfigError
from promptgym.lm.base import Prompt, SoftPrompt, TokenPrompt
from promptgym.lm.keys import KeyStore

#: the ``format`` of receipts this module signs and checks
RECEIPT_FORMAT = "promptgym-receipt/1"
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


# ---------------------------------------------------------------------------------------------- hashing
def canonical_json(obj: Any) -> bytes:
    """The one byte string of a JSON value that is hashed or signed (sorted keys, no spaces, ASCII)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def prompt_sha256(prompt: Prompt) -> str:
    """The hash of a prompt as the server scores it: the same on the client, the server and a verifier."""
    if isinstance(prompt, TokenPrompt):
        return _sha(b"tokens\0", np.asarray(prompt.ids, dtype="<i8").tobytes())
    if isinstance(prompt, SoftPrompt):
        embeds = np.ascontiguousarray(prompt.embeds, dtype="<f4")
        return _sha(b"soft\0", np.asarray(embeds.shape, dtype="<i8").tobytes(), embeds.tobytes())
    raise ConfigError(f"a prompt is a TokenPrompt or SoftPrompt, got {type(prompt).__name__}")


def text_prompt_sha256(text: str) -> str:
    """The hash of a text prompt (``/v1/completions`` takes text too)."""
    return _sha(b"text\0", text.encode("utf-8"))


def rows_sha256(segments: Iterable[Sequence[str]], label_words: Iterable[str], label_only: bool) -> str:
    """The hash of what a score request scores its prompt on: rendered rows, label words, the mode."""
    return _sha(b"rows\0", canonical_json({"segments": [[str(a), str(b)] for a, b in segments],
                                           "label_words": [str(w) for w in label_words],
                                           "label_only": bool(label_only)}))


def options_sha256(options: Any) -> str:
    """The rows hash of a ``/v1/completions`` call: its body's fields but the prompt (no rows there)."""
    return _sha(b"options\0", canonical_json(options))


def response_sha256(answer: Any) -> str:
    """The hash of one call's answer (its JSON form, as sent)."""
    return _sha(b"response\0", canonical_json(answer))


def request_sha256(prompt: str, rows: str) -> str:
    """A call's request hash, from its prompt's and rows' hashes (so a prompt alone can be matched)."""
    return _sha(b"request\0", bytes.fromhex(prompt), bytes.fromhex(rows))


def chain_start(key_id: str) -> str:
    """The head of a key's empty chain: it names the key, so no entry fits another key's chain."""
    return _sha(b"promptgym receipt chain\0", key_id.encode("ascii"))


@dataclass(frozen=True)
class Entry:
    """One charged and answered call in a key's chain."""

    prompt_sha256: str
    rows_sha256: str
    response_sha256: str
    examples: int = 0

    @property
    def request_sha256(self) -> str:
        return request_sha256(self.prompt_sha256, self.rows_sha256)

    def triple(self) -> list[str]:
        return [self.prompt_sha256, self.rows_sha256, self.response_sha256]


def extend(head: str, entries: Iterable[Entry]) -> str:
    """The head after ``entries`` are appended to a chain whose head is ``head``."""
    for e in entries:
        head = _sha(bytes.fromhex(head), bytes.fromhex(e.request_sha256), bytes.fromhex(e.response_sha256))
    return head


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


def fingerprint(public_key: Any) -> str:
    """The signer's id in receipts: sha256 of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(pem: bytes | str, where: str) -> Any:
    """An Ed25519 public key from PEM; a ConfigError naming ``where`` for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{where} is not a PEM public key (give the output of `promptgym keys pubkey`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def signature_ok(public_key: Any, body: Mapping[str, Any], signature: str) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of the receipt ``body``."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, canonical_json(dict(body)))
    except (InvalidSignature, ValueError):
        return False
    return True


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


# ---------------------------------------------------------------------------------------------- client side
def run_proof(final: Mapping[str, Any], boundary: int) -> dict[str, Any]:
    """A run's receipt as a submission carries it: the signed receipt of the whole chain, the head after
    the first ``boundary`` calls (the search's) and the calls after it, each as [prompt, rows,
    response] hashes. ``final`` is ``GET /v1/receipt?from=0``'s answer."""
    body, log = dict(final["receipt"]), final["log"]
    entries = [Entry(*e[:3]) for e in log["entries"]]
    if log["from"] != 0 or len(entries) != body["calls"] or not 0 <= boundary <= len(entries):
        raise ConfigError(f"the server's receipt log does not hold the run's {boundary} search calls")
    prefix = extend(log["head"], entries[:boundary])
    if extend(prefix, entries[boundary:]) != body["head"]:
        raise ConfigError("the server's receipt log does not lead to its receipt's head")
    return {"body": body, "signature": final["signature"], "prefix_head": prefix,
            "entries": [e.triple() for e in entries[boundary:]]}
