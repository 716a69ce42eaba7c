"""Label scores kept on disk: uncharged test and OOD scoring that survives its process.

Why: the protocol scores every returned prompt on the test split and on each OOD task of the panel
in fp32, uncharged. On this project's CPUs that is minutes per prompt (a manual template with its
OOD panel: 7-13 minutes on 1,000-row splits) and hours per prompt set (a 100-member ABC-SMC set),
and the in-memory :class:`~promptgym.evaluation.ScoreCache` dies with its process: a sweep resumed
the next day, or the calibrated entry scored in another process than its manual template, paid it
all again. A :class:`ScoreStore` keeps each scored request's answer in one SQLite file, keyed by the
request itself (:func:`~promptgym.journal.request_fingerprint`: prompt, rendered rows, label words)
and by everything of the model that moves its numbers (:func:`model_identity`: weights sha256, dtype,
row chunking and caches, the torch / transformers / promptgym versions), so any later process asking
the same model the same question reads the answer the model gave once instead of computing it again.
Only presets are stored: their weights hash is of the weight files, while a hub id's or a local
folder's is of its name and revision, which a re-saved folder does not change.

What it never does: answer a charged call (an env's calls go through the budget and the call
journal, not here), serve a verifier (``promptgym submit`` re-scores every prompt itself: a store
speeds up making a run, never checking one), or stand in for a served model (a served model's test
scoring belongs to its usage receipt, so only in-process models are stored: :meth:`ScoreStore.keeps`).
Answers are stored as the backend gave them, bit for bit (:func:`~promptgym.journal.encode_result`);
a set's members scored in other groups than an uncached run's may differ in the last bits (rows share
padded batches otherwise), well inside verification's tolerance. A store is a cache: a read or write
that fails (a locked or full disk) warns and scores anyway. One file serves one host's processes
(SQLite's write-ahead log needs shared memory: not on a network file system). The same process's
in-memory cache is shared with verification run in that process; ``promptgym submit`` is its own process.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from promptgym.errors import ConfigError
from promptgym.journal import decode_result, encode_result, request_fingerprint
from promptgym.lm.base import BlackBoxLM, ScoreRequest, ScoreResult

#: the layout of a store file; a file of another layout is refused, not misread
STORE_FORMAT = 1
#: requests scored per LM call on a miss: each group is stored as soon as it is answered, so an
#: interrupted set loses at most one group of members
GROUP = 4


def model_identity(lm: BlackBoxLM) -> str:
    """What makes two LM objects answer alike: class, name, weights sha256, dtype, the scoring settings
    an in-process model keys its own memo by (chunking, caches, row limit) and the library versions."""
    import torch
    import transformers

    import promptgym

    settings = [getattr(lm, k, None) for k in ("chunk_size", "chunk_overhead", "input_cache", "prefix_cache",
                                                "max_length")]
    return json.dumps([type(lm).__name__, str(lm.name), str(lm.weights_sha256), str(lm.dtype), settings,
                       torch.__version__, transformers.__version__, promptgym.__version__], default=str)


def _warn(message: str) -> None:
    print(f"promptgym: warning: {message}", file=sys.stderr, flush=True)


class ScoreStore:
    """Scored requests in the SQLite file ``path`` (created with its folder if missing).

    Several processes may share one file (a sweep's Ray workers): SQLite serialises the writes and a
    reader waits up to ``timeout`` seconds for a writer.
    """

    def __init__(self, path: str | PathLike[str], timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise ConfigError(f"score store {self.path} is a folder; give a file path such as "
                              f"{self.path / 'scores.sqlite'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"score store {self.path}: cannot create its folder ({exc.strerror or exc})") from None
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError as exc:  # locked, unreadable, not openable: a good store may be behind it
            raise ConfigError(f"score store {self.path} cannot be opened: {exc}") from None
        except sqlite3.DatabaseError:
            raise ConfigError(f"score store {self.path} is not a promptgym score store (not an SQLite file); "
                              "use another file") from None
        if not tables and new:  # a file of our own: made here, nothing else in it
            try:
                with self._db:
                    self._db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    self._db.execute("CREATE TABLE scores (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
                    self._db.execute("INSERT INTO meta VALUES ('format', ?)", (str(STORE_FORMAT),))
            except sqlite3.Error as exc:
                self._db.close()
                raise ConfigError(f"score store {self.path} cannot be written: {exc}") from None
            tables = {"meta", "scores"}
        row = None
        if "meta" in tables:  # checked before anything is written to a file we did not make
            try:
                row = self._db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            except sqlite3.Error:  # somebody else's table of that name
                row = None
        if row is None or row[0] != str(STORE_FORMAT) or tables != {"meta", "scores"}:
            self._db.close()
            what = f"has format {row[0]}, this promptgym reads format {STORE_FORMAT}" \
                if row is not None and row[0] != str(STORE_FORMAT) else "is not a promptgym score store"
            raise ConfigError(f"score store {self.path} {what}; use another file")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer (our file only)
        except sqlite3.OperationalError as exc:  # another process holds it now: the mode it has stays
            _warn(f"score store {self.path}: write-ahead log not switched on ({exc})")
        self._lock = threading.Lock()
        self.hits = 0  # requests answered from the file since it was opened
        self.misses = 0  # requests this store sent to an LM

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def keeps(lm: BlackBoxLM) -> bool:
        """Whether answers of ``lm`` may be stored: an in-process preset (weights hashed from their files)
        with exact scores."""
        from promptgym.lm.local import LocalLM  # imported when needed: torch is heavy
        from promptgym.lm.presets import PRESETS

        return isinstance(lm, LocalLM) and lm.name in PRESETS and bool(lm.weights_sha256) and not lm.approximate

    @staticmethod
    def key(lm: BlackBoxLM, request: ScoreRequest) -> str:
        """The store key of ``request`` asked of ``lm``."""
        return hashlib.sha256((model_identity(lm) + request_fingerprint([request])).encode()).hexdigest()

    def get(self, key: str) -> ScoreResult | None:
        """The stored answer of ``key``, None if there is none (or the file cannot be read now: a warning)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT result FROM scores WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            _warn(f"score store {self.path}: read failed ({exc}); scoring instead")
            return None
        return None if row is None else decode_result(json.loads(row[0]))

    def put(self, items: Sequence[tuple[str, ScoreResult]]) -> None:
        """Store answers, all or none (one transaction); a failed write warns and loses only the cache entry."""
        rows = [(k, json.dumps(encode_result(r))) for k, r in items]
        try:
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            _warn(f"score store {self.path}: write failed ({exc}); the scores are used but not kept")

    def score(self, lm: BlackBoxLM, requests: Sequence[ScoreRequest], group: int = GROUP) -> list[ScoreResult]:
        """``lm``'s answers to ``requests``: stored ones read, the others scored ``group`` requests per LM call
        and stored as each call returns. An LM :meth:`keeps` refuses is simply asked (nothing stored)."""
        if not self.keeps(lm):
            return lm.score(requests)
        keys = [self.key(lm, r) for r in requests]
        out: list[ScoreResult | None] = [self.get(k) for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        self.hits += len(requests) - len(todo)
        for start in range(0, len(todo), max(1, int(group))):
            chunk = todo[start:start + max(1, int(group))]
            answers = lm.score([requests[i] for i in chunk])
            self.put([(keys[i], a) for i, a in zip(chunk, answers)])
            self.misses += len(chunk)
            for i, a in zip(chunk, answers):
                out[i] = a
        return [r for r in out if r is not None]

    def view(self, lm: BlackBoxLM) -> StoredLM:
        """``lm`` answering through this store (what a :class:`~promptgym.envs.scoring.Scorer` is given)."""
        return StoredLM(lm, self)


class StoredLM:
    """An LM whose ``score`` goes through a :class:`ScoreStore`; every other member is the LM's own.

    A delegating wrapper rather than a subclass: it is made per scoring call around whichever LM
    (bf16 or fp32) the caller chose, and owns nothing of it.
    """

    def __init__(self, lm: BlackBoxLM, store: ScoreStore) -> None:
        self.lm, self.store = lm, store

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.store.score(self.lm, requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lm, name)


def open_store(path: str | PathLike[str] | None) -> ScoreStore | None:
    """A store at ``path``, None for None (the callers' "no store")."""
    return None if path is None else ScoreStore(path)


__all__ = ["GROUP", "STORE_FORMAT", "ScoreStore", "StoredLM", "model_identity", "open_store"]
