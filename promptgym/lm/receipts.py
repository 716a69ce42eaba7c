"""Usage receipts, the part every side shares: the hash chain, the receipt's signature check, a run's proof.

Why: a leaderboard ranks runs "at 1,000 calls", but a run's call count is the submitter's own
harness's word. A server that meters the key can attest it instead: for every call it charges and
answers, ``promptgym serve`` appends one entry to the key's chain (:mod:`promptgym.serve.receipts`
keeps it and signs receipts). An entry is three hashes:

* ``prompt_sha256``: the prompt exactly as scored (token ids as int64, or the soft prompt's float32
  values and shape), so anyone holding the prompt recomputes it;
* ``rows_sha256``: the rendered rows and label words it was scored on. The server never sees data
  files, only rendered rows, so this is the data it can vouch for: a verifier renders its own copy
  of a split and compares. (Hashes a client declared would only repeat the client's word);
* ``response_sha256``: the answer sent back.

``head = sha256(previous head || request || response)`` from a start that names the key, so an
entry cannot be dropped, reordered or moved to another key's chain without changing the head. A
receipt states the key's name and public id (never the key), the model's weights hash and dtype, the
calls and examples in the chain, its first and last call times and its head, signed with the
server's Ed25519 key. Anyone with the receipt and the entries after a point recomputes the head; the
leaderboard's rules for that are in :mod:`promptgym.bench.receipts`. This module is what the
server, a client (:func:`run_proof`) and a verifier all compute, so it needs no key store, no
server and no private key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptgym.errors import ConfigError
from promptgym.lm.base import Prompt, SoftPrompt, TokenPrompt

#: the ``format`` of receipts the server signs and verifiers check
RECEIPT_FORMAT = "promptgym-receipt/1"


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


# ---------------------------------------------------------------------------------------------- signatures
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
