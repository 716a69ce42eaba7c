"""Leaderboard storage: one validated JSON file per submission under ``leaderboards/<env_id>/``.

Files are the database: they are reviewed in pull requests and committed, so the store is careful
about three things.

* **Names come from validated fields only** (date, agent name, tier, a hash of the content), never
  from a path or name the submitter chose, so a submission cannot write outside its folder or
  shadow another file.
* **Writes are atomic and never overwrite**: a temporary file in the target folder is renamed into
  place with ``os.replace``, so a reader sees either no file or a complete one. The name embeds
  the content hash, so two writers racing for the same name are writing the same content.
* **Reading is strict**: every committed file is re-validated, and one that fails raises (naming
  the file) instead of being skipped, because a silently missing entry is a wrong leaderboard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from promptgym.bench.schema import (
    ENV_ID_RE,
    MAX_BYTES,
    check_budget,
    created_date,
    parse_submission,
    validate_submission,
)
from promptgym.errors import InvalidSubmissionError

__all__ = ["LEADERBOARD_DIR", "TRUSTED_KEYS_DIR", "add_submission", "canonical_json", "content_sha256",
           "dumps_submission", "load_entries", "submission_filename", "write_text_atomic"]

LEADERBOARD_DIR = "leaderboards"
#: the folder of leaderboards/ holding the public keys of servers whose usage receipts it trusts (``*.pub``)
TRUSTED_KEYS_DIR = "trusted_keys"
_GENERATED = {"README.md", "index.html", "PROTOCOL.md", "submission.schema.json", "screenshot.png"}  # not entries


def canonical_json(sub: dict[str, Any]) -> str:
    """A formatting-independent serialisation (sorted keys, no spaces) that the content hash is taken of."""
    return json.dumps(sub, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_sha256(sub: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the *validated* submission (so re-indenting a file keeps its hash)."""
    return hashlib.sha256(canonical_json(validate_submission(sub)).encode("ascii")).hexdigest()


def submission_filename(sub: dict[str, Any]) -> str:
    """``<created date>_<agent name>_<tier>_<12 hex of the content sha256>.json``.

    Every part is checked by the schema (the date is re-derived from the parsed timestamp, the
    agent name matches ``[a-z0-9_-]{1,40}``, the tier is a known one), so the name can contain no
    path separator, and the hash makes distinct submissions land in distinct files.
    """
    valid = validate_submission(sub)
    sha = hashlib.sha256(canonical_json(valid).encode("ascii")).hexdigest()[:12]
    return f"{created_date(valid)}_{valid['agent']['name']}_{valid['tier']}_{sha}.json"


def dumps_submission(sub: dict[str, Any]) -> str:
    """Readable, diff-friendly JSON: one key per line, but arrays (curves, actions) on one line.

    ``json.dumps(indent=2)`` would put each curve number on its own line and could push a valid
    10,000-point submission over the 5 MB limit when it is read back.
    """
    return _dump(validate_submission(sub), 0) + "\n"


def _dump(value: Any, level: int) -> str:
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[\n" + ",\n".join(inner + _dump(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def entry_path(root: Path, sub: dict[str, Any]) -> Path:
    """Where :func:`add_submission` writes ``sub`` (a validated submission):
    ``<root>/leaderboards/<env_id>/<name>.json``."""
    board = Path(root) / LEADERBOARD_DIR
    folder = board / sub["env_id"]
    target = folder / submission_filename(sub)
    if target.resolve().parent != folder.resolve() or folder.resolve().parent != board.resolve():
        raise InvalidSubmissionError(f"submission: refusing to write outside {board}")  # defence in depth
    return target


def add_submission(root: Path, sub: dict[str, Any]) -> Path:
    """Validate ``sub``, check its budget tier, and write it to ``<root>/leaderboards/<env_id>/<name>.json``.

    Raises :class:`InvalidSubmissionError` (nothing is written) when the submission is invalid,
    and ``FileExistsError`` when the same submission was already added. Returns the new path.
    """
    valid = validate_submission(sub)
    check_budget(valid)
    text = dumps_submission(valid)
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise InvalidSubmissionError(f"submission: serialises to {len(data):,} bytes, the limit is {MAX_BYTES:,}")
    if parse_submission(data) != valid:  # what we write must read back as exactly what we validated
        raise InvalidSubmissionError("submission: does not survive a JSON round trip unchanged")
    target = entry_path(root, valid)
    folder = target.parent
    if target.exists():
        raise FileExistsError(f"{target} already exists: this exact submission was already added")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)
    return target


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Same folder so the rename stays on one filesystem (and is therefore atomic); the temp name
    starts with '.' so :func:`load_entries` never mistakes a crashed write for an entry.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; committed files should be world-readable
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_entries(root: Path) -> list[dict[str, Any]]:
    """Read and validate every committed submission under ``<root>/leaderboards``.

    Layout rules, each violation raising :class:`InvalidSubmissionError` with the file's path:
    every sub-folder is named after an env id and holds only ``*.json`` submissions for that env
    id, each named by :func:`submission_filename` of its content (so an edited file is caught) and
    within its tier's budget. Hidden files (``.gitkeep``, leftovers of interrupted writes) are
    ignored; top-level files other than the generated pages and ``PROTOCOL.md`` are errors, and the
    ``trusted_keys`` folder holds public keys, not entries.
    Returns the validated submissions sorted by env id, tier and file name.
    """
    board = Path(root) / LEADERBOARD_DIR
    if not board.is_dir():
        return []
    found: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
    for child in sorted(board.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file():
            if child.name not in _GENERATED:
                raise InvalidSubmissionError(
                    f"{child}: unexpected file; submissions go in {LEADERBOARD_DIR}/<env_id>/ "
                    f"(known top-level files: {sorted(_GENERATED)})")
            continue
        if child.name == TRUSTED_KEYS_DIR:  # not entries (promptgym.bench.receipts reads them)
            continue
        if not ENV_ID_RE.fullmatch(child.name):
            raise InvalidSubmissionError(f"{child}: folder name is not an env id like 'PromptSST2-v0'")
        for path in sorted(child.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix != ".json" or not path.is_file():
                raise InvalidSubmissionError(f"{path}: only submission .json files belong in {child.name}/")
            sub = _load_one(path)
            found.append(((sub["env_id"], sub["tier"], path.name), sub))
    return [sub for _, sub in sorted(found, key=lambda item: item[0])]


def _load_one(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise InvalidSubmissionError(f"{path}: file is {size:,} bytes, the limit is {MAX_BYTES:,}")
    try:
        sub = parse_submission(path.read_bytes())
        check_budget(sub)
    except InvalidSubmissionError as exc:
        raise InvalidSubmissionError(f"{path}: {exc}") from None
    if sub["env_id"] != path.parent.name:
        raise InvalidSubmissionError(f"{path}: env_id {sub['env_id']!r} does not match its folder {path.parent.name!r}")
    expected = submission_filename(sub)
    if path.name != expected:
        raise InvalidSubmissionError(
            f"{path}: file name does not match its content (expected {expected}); was the file edited after "
            f"it was added? Add changed results as a new submission")
    return sub
