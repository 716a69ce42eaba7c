"""The call journal: what lets a killed run resume without giving back a single spent call.

A run journals every batched LM answer its env receives: a fingerprint of the requests and the exact
scores, appended and flushed to disk after each call batch (so a kill loses at most the batch in
flight). Resuming runs the agent again from its seed with the same journal: its first calls are
answered from the journal (no LM work, no server quota), and because an agent is a deterministic
function of its seed and of the answers it gets, it is back where the killed run stopped after a few
seconds of agent arithmetic; from there calls go to the LM and are journaled. The env charges
replayed calls like live ones, so the budget meter, curves and RNG streams come out as in an
uninterrupted run, and so does the final prompt.

Why replay, not a pickled agent state: one mechanism covers every agent (BBT's pycma, BDPL's
optimiser, SB3's PPO, a user's own) with no per-agent checkpoint code, and it is checked: the next
request of a resumed run must have the fingerprint the journal recorded, else the resume stops with
:class:`~promptgym.errors.ResumeError` instead of continuing a different run. Test-split scoring is
not journaled: it is uncharged and simply redone after a resume.

The header also records the thread settings the search ran under (:mod:`promptgym.threads`): a
resume applies them, because an agent's arithmetic is deterministic only on one thread setting.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.errors import ResumeError
from promptgym.lm.base import BlackBoxLM, ScoreRequest, ScoreResult, SoftPrompt

JOURNAL_VERSION = 1


def request_fingerprint(requests: Sequence[ScoreRequest]) -> str:
    """sha256 of what a batch asks the LM: every prompt (token ids or the exact float32 soft vectors),
    every rendered example, the label words and whether only labels were asked for."""
    h = hashlib.sha256()
    for req in requests:
        if isinstance(req.prompt, SoftPrompt):
            arr = np.ascontiguousarray(req.prompt.embeds, dtype=np.float32)
            h.update(b"soft" + repr(arr.shape).encode() + arr.tobytes())
        else:
            h.update(b"ids" + json.dumps(list(req.prompt.ids)).encode())
        h.update(json.dumps([list(req.segments), list(req.label_words), bool(req.label_only)]).encode())
    return h.hexdigest()


def _encode_array(arr: np.ndarray | None) -> dict[str, Any] | None:
    if arr is None:
        return None
    a = np.ascontiguousarray(arr)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode_array(obj: dict[str, Any] | None) -> np.ndarray | None:
    if obj is None:
        return None
    raw = base64.b64decode(obj["data"])
    return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()


def encode_result(res: ScoreResult) -> dict[str, Any]:
    """A ScoreResult as JSON, bit-exact (arrays as base64 of their bytes)."""
    return {"predictions": _encode_array(np.asarray(res.predictions)), "logprobs": _encode_array(res.logprobs),
            "label_logprobs": _encode_array(res.label_logprobs), "num_tokens": int(res.num_tokens),
            "extra": json.loads(json.dumps(res.extra or {}, default=str))}


def decode_result(obj: dict[str, Any]) -> ScoreResult:
    preds = _decode_array(obj["predictions"])
    assert preds is not None
    return ScoreResult(predictions=preds, logprobs=_decode_array(obj["logprobs"]),
                       label_logprobs=_decode_array(obj["label_logprobs"]), num_tokens=int(obj["num_tokens"]),
                       extra=dict(obj.get("extra") or {}))


def journal_identity(path: str | Path) -> dict[str, Any]:
    """The run identity in a journal's header: every setting needed to start the run again."""
    p = Path(path)
    if not p.is_file():
        raise ResumeError(f"no call journal at {p}: nothing to resume (the run finished, or never started)")
    with p.open("rb") as fh:
        first = fh.readline()
    try:
        head = json.loads(first)
    except ValueError:
        head = {}
    if not isinstance(head, dict) or head.get("journal") != JOURNAL_VERSION \
            or not isinstance(head.get("identity"), dict):
        raise ResumeError(f"{p} is not a promptgym call journal (version {JOURNAL_VERSION})")
    return head["identity"]


class CallJournal:
    """An append-only journal of one run's LM calls at ``path`` (JSON lines: a header, then one line per
    batched call).

    :param path: the journal file; an existing one is loaded for replay
    :param identity: what makes two runs the same run (env, agent and its config, seeds, budget, model,
        dtype...); a journal written for another identity is refused
    :param threads: the thread settings a new journal records (:func:`promptgym.threads.current_threads`);
        an existing journal keeps its own, read back as :attr:`threads` (None in journals written before
        they were recorded)
    """

    def __init__(self, path: str | Path, identity: dict[str, Any], threads: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.threads = None if threads is None else dict(threads)
        self._records: list[dict[str, Any]] = []
        self._next = 0
        self.replayed_calls = 0  # calls answered from the file so far
        if self.path.is_file():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            head: dict[str, Any] = {"journal": JOURNAL_VERSION, "identity": self.identity}
            if self.threads is not None:
                head["threads"] = self.threads
            self._append(head)

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        good_end, parsed = 0, []
        for line in lines[:-1]:  # the last element is what follows the last newline: an unfinished line
            try:
                parsed.append(json.loads(line))
            except ValueError:
                break
            good_end += len(line) + 1
        if not parsed or parsed[0].get("journal") != JOURNAL_VERSION:
            raise ResumeError(f"{self.path} is not a promptgym call journal (version {JOURNAL_VERSION})")
        if parsed[0].get("identity") != self.identity:
            diff = sorted(k for k in set(parsed[0].get("identity", {})) | set(self.identity)
                          if parsed[0].get("identity", {}).get(k) != self.identity.get(k))
            raise ResumeError(f"{self.path} was written by another run (differs in {', '.join(diff)}); "
                              "resume it with the settings it was started with")
        if good_end < len(data):  # a kill in the middle of a write: drop the partial line, keep the rest
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
        self._records = parsed[1:]
        self.threads = parsed[0].get("threads")

    @property
    def recorded_batches(self) -> int:
        """Batched calls on file (replayed or not)."""
        return len(self._records)

    @property
    def recorded_calls(self) -> int:
        """API calls on file: one per request of every recorded batch."""
        return sum(len(r["results"]) for r in self._records)

    @property
    def replaying(self) -> bool:
        """Whether the next batch is answered from the file."""
        return self._next < len(self._records)

    # ------------------------------------------------------------------ scoring
    def score(self, lm: BlackBoxLM, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """``lm.score(requests)``, answered from the journal while it has recorded batches left, else
        scored by ``lm`` and journaled before it is returned."""
        fingerprint = request_fingerprint(requests)
        if self.replaying:
            rec = self._records[self._next]
            if rec["request"] != fingerprint or len(rec["results"]) != len(requests):
                raise ResumeError(f"the resumed run diverged from its journal at batch {self._next + 1} of "
                                  f"{len(self._records)} ({self.path}): the agent asked for other prompts than "
                                  "the killed run did (changed code, config, package versions or thread settings?)")
            self._next += 1
            self.replayed_calls += len(requests)
            results = [decode_result(r) for r in rec["results"]]
            lm.remember(requests, results)  # a later identical request in this process needs no forward pass
            return results
        results = lm.score(requests)
        rec = {"batch": len(self._records) + 1, "request": fingerprint, "results": [encode_result(r) for r in results]}
        self._append(rec)
        self._records.append(rec)
        self._next += 1
        return results

    def _append(self, obj: dict[str, Any]) -> None:
        with self.path.open("ab") as fh:
            fh.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        """Delete the file (the run finished and its results are written)."""
        self.path.unlink(missing_ok=True)
