"""The leaderboard's rules for usage receipts: when an entry's budget counts as verified.

A run's call count is otherwise its harness's word. A run made against ``promptgym serve`` with a
key of its own carries the server's signed receipt (:mod:`promptgym.lm.receipts`) and the calls
after its search, and :func:`check_receipts` (no model needed) accepts it only if

* the signer is a key the board trusts (``leaderboards/trusted_keys/*.pub``) and the signature
  matches the receipt's content (a forged or edited receipt, or one re-signed by another key, fails);
* the receipt is about the submission's model (weights hash) and each run has its own key;
* the listed calls lead from the stated head to the signed head (nothing dropped, reordered or
  taken from another key's chain), and the calls before them, the search, fit the tier.

:func:`check_prompts` (in :func:`promptgym.bench.evaluate.verify`, which rebuilds the prompts) adds
that every submitted prompt, each member of a set, was scored by that server on the test split under
the receipt (its request hash, recomputed from the submission and the verifier's own test rows, is
among the listed calls), and that the listed calls score nothing else. :func:`check_unused` refuses
a receipt an accepted entry already carries.

What it cannot prove: that nobody searched elsewhere (the weights are public; another key or a local
copy of the model leave no trace here). "Budget verified" means the server attests that the key that
scored the submitted prompts was charged for at most the tier before scoring them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptgym.bench.schema import TIERS
from promptgym.bench.store import LEADERBOARD_DIR, TRUSTED_KEYS_DIR, canonical_json
from promptgym.errors import ConfigError, InvalidSubmissionError
from promptgym.lm.base import Prompt
from promptgym.lm.receipts import (
    RECEIPT_FORMAT,
    Entry,
    extend,
    fingerprint,
    load_public_key,
    prompt_sha256,
    signature_ok,
)

__all__ = ["CheckedReceipt", "budget_verified", "check_prompts", "check_receipts", "check_unused", "trusted_keys"]


@dataclass(frozen=True)
class CheckedReceipt:
    """A run's receipt that passed :func:`check_receipts`."""

    run: int
    body: Mapping[str, Any]
    entries: tuple[Entry, ...]  # the calls after the search

    @property
    def search_calls(self) -> int:
        return int(self.body["calls"]) - len(self.entries)


def trusted_keys(root: str | Path) -> dict[str, Any]:
    """The public keys in ``<root>/leaderboards/trusted_keys/*.pub``, by fingerprint (none: an empty dict)."""
    folder = Path(root) / LEADERBOARD_DIR / TRUSTED_KEYS_DIR
    keys: dict[str, Any] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.pub")):
            key = load_public_key(path.read_bytes(), str(path))
            keys[fingerprint(key)] = key
    return keys


def check_receipts(sub: Mapping[str, Any], trusted: Mapping[str, Any]) -> list[CheckedReceipt] | None:
    """Every run's receipt checked (see the module docstring), or None for a submission without any."""
    runs = sub["runs"]
    carried = [i for i, run in enumerate(runs) if "receipt" in run]
    if not carried:
        return None
    if len(carried) != len(runs):
        missing = next(i for i in range(len(runs)) if i not in carried)
        raise InvalidSubmissionError(f"runs[{missing}].receipt: missing; an entry with usage receipts carries one "
                                     "per run (or none)")
    budget = TIERS[sub["tier"]]
    seen: dict[tuple[str, str], int] = {}
    out = []
    for i, run in enumerate(runs):
        where = f"runs[{i}].receipt"
        rec = run["receipt"]
        body = rec["body"]
        if body["format"] != RECEIPT_FORMAT:
            raise InvalidSubmissionError(f"{where}.body.format: this promptgym checks {RECEIPT_FORMAT!r} receipts, "
                                         f"got {body['format']!r}")
        key = trusted.get(body["signer"])
        if key is None:
            raise InvalidSubmissionError(f"{where}.body.signer: signed by {body['signer'][:16]}..., a key this "
                                         f"leaderboard does not trust ({LEADERBOARD_DIR}/{TRUSTED_KEYS_DIR}/*.pub)")
        if not signature_ok(key, body, rec["signature"]):
            raise InvalidSubmissionError(f"{where}.signature: does not match the receipt's content (forged, edited, "
                                         "or signed by another key)")
        if body["model_sha256"] != sub["model"]["weights_sha256"]:
            raise InvalidSubmissionError(f"{where}.body.model_sha256: the server scored with other weights than "
                                         "model.weights_sha256")
        ident = (body["signer"], body["key_id"])
        if ident in seen:
            raise InvalidSubmissionError(f"{where}.body.key_id: key {body['key']!r} also signs runs[{seen[ident]}]; "
                                         "each run needs its own key")
        seen[ident] = i
        entries = tuple(Entry(*e) for e in rec["entries"])
        if len(entries) > body["calls"]:
            raise InvalidSubmissionError(f"{where}.entries: lists {len(entries)} calls, the receipt signs "
                                         f"{body['calls']}")
        if extend(rec["prefix_head"], entries) != body["head"]:
            raise InvalidSubmissionError(f"{where}.entries: these calls do not lead to the signed head (calls "
                                         "missing, reordered, or from another key's chain)")
        checked = CheckedReceipt(i, body, entries)
        if checked.search_calls > budget:
            raise InvalidSubmissionError(f"{where}.body.calls: the key was charged {checked.search_calls} calls "
                                         f"before scoring the submitted prompts; the {sub['tier']!r} tier allows "
                                         f"{budget}")
        out.append(checked)
    return out


def check_prompts(checked: CheckedReceipt, prompts: Sequence[Prompt], test_rows: str) -> None:
    """Refuse unless each of a run's ``prompts`` (a set's members, in order) was scored on the test rows
    whose hash is ``test_rows`` among the receipt's listed calls, and those calls score nothing else."""
    i = checked.run
    hashes = [prompt_sha256(p) for p in prompts]
    on_test = {e.prompt_sha256 for e in checked.entries if e.rows_sha256 == test_rows}
    for k, h in enumerate(hashes):
        if h not in on_test:
            what = "prompt" if len(hashes) == 1 else f"prompt.members[{k}]"
            raise InvalidSubmissionError(f"runs[{i}].{what}: the receipt's calls do not score it on the test split "
                                         "(its request hash is not in the chain)")
    submitted = set(hashes)
    for j, e in enumerate(checked.entries):
        if e.prompt_sha256 not in submitted:
            raise InvalidSubmissionError(f"runs[{i}].receipt.entries[{j}]: scores a prompt the run does not submit; "
                                         "the calls after the search are the scoring of the submitted prompts")


def check_unused(sub: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a receipt whose key already signs another accepted entry's run (``entries``: the board's;
    the submission itself, if already on it, is skipped, so re-checking a committed entry passes)."""
    mine = canonical_json(dict(sub))
    used: dict[tuple[str, str], str] = {}
    for other in entries:
        if canonical_json(dict(other)) == mine:
            continue
        for run in other["runs"]:
            if "receipt" in run:
                body = run["receipt"]["body"]
                used[(body["signer"], body["key_id"])] = f"{other['env_id']} / {other['agent']['name']}"
    for i, run in enumerate(sub["runs"]):
        if "receipt" in run:
            body = run["receipt"]["body"]
            owner = used.get((body["signer"], body["key_id"]))
            if owner is not None:
                raise InvalidSubmissionError(f"runs[{i}].receipt.body.key_id: key {body['key']!r} already signs a run "
                                             f"of the accepted entry {owner}; a receipt counts for one entry")


def budget_verified(sub: Mapping[str, Any], trusted: Mapping[str, Any]) -> bool:
    """Whether an accepted entry shows as budget verified: every run carries a receipt that passes
    :func:`check_receipts` (the prompts were checked when it was submitted)."""
    try:
        return check_receipts(sub, trusted) is not None
    except (InvalidSubmissionError, ConfigError):
        return False
