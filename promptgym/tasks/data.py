"""Loading the real benchmark splits.

Two sources, chosen by configuration:

* a local directory (``PROMPTGYM_DATA_DIR`` or the ``data_dir`` argument) in the layout of the
  offline mirror: ``<task>/16-<seed>/{train,dev}.jsonl``, ``<task>/test.jsonl``,
  ``<task>/pool.jsonl`` and a ``manifest.json`` with row counts. These are the standard LM-BFF /
  RLPrompt 16-shot splits used by leaderboards. Every file is hashed (sha256) when read so that a
  result can state exactly which data it used, and row counts are checked against the manifest.
* the Hugging Face hub through ``datasets`` when no directory is configured. k-shot splits are
  then *re-sampled* by seed (16 per class from the hub's train split, train and dev disjoint):
  the same task, but **not** the mirrored files, so such results are not leaderboard-comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from datasets import Dataset

from promptgym.errors import (
    DataIntegrityError,
    DataNotFoundError,
    HubUnavailableError,
    SplitUnavailableError,
    UnknownSeedError,
)
from promptgym.tasks.catalog import get_task
from promptgym.tasks.spec import TaskSpec

SEEDS: tuple[int, ...] = (13, 21, 42, 87, 100)
SPLITS: tuple[str, ...] = ("train", "dev", "test", "pool")
SHOTS = 16
DATA_DIR_ENV = "PROMPTGYM_DATA_DIR"


@dataclass(frozen=True)
class TaskSplit:
    """One split of one task: the rows (a ``datasets.Dataset``) and where they came from."""

    task: TaskSpec
    split: str
    seed: int | None
    rows: Dataset
    source: str  # a file path, or "hub:<path>/<name>"
    sha256: str  # of the file's bytes (local) or of the canonical JSON of the rows (hub)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def texts(self) -> list[str]:
        return list(self.rows["text"])

    @property
    def text_pairs(self) -> list[str | None]:
        return list(self.rows["text_pair"]) if "text_pair" in self.rows.column_names else [None] * len(self)

    @property
    def labels(self) -> list[int]:
        return [int(x) for x in self.rows["label"]]


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The configured local data directory, or None to use the hub."""
    value = explicit if explicit is not None else os.environ.get(DATA_DIR_ENV)
    if value in (None, ""):
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"data directory {str(path)!r} (from {'argument' if explicit is not None else DATA_DIR_ENV}) "
            f"does not exist; point {DATA_DIR_ENV} at the benchmark mirror (e.g. ../shared/data) "
            f"or unset it to load from the Hugging Face hub"
        )
    return path


def load_split(task: str | TaskSpec, split: str, seed: int | None = None,
               data_dir_path: str | os.PathLike[str] | None = None) -> TaskSplit:
    """Load ``split`` ("train", "dev", "test" or "pool") of ``task``.

    ``seed`` selects the 16-shot split for train/dev (one of 13, 21, 42, 87, 100) and is ignored
    for test/pool.
    """
    spec = get_task(task)
    if split not in SPLITS:
        raise SplitUnavailableError(f"unknown split {split!r}; splits are {SPLITS}")
    if split in ("train", "dev"):
        if seed is None:
            raise UnknownSeedError(f"the {split} split needs a seed, one of {SEEDS}")
        if int(seed) not in SEEDS:
            raise UnknownSeedError(f"unknown k-shot seed {seed!r}; published splits use seeds {SEEDS}")
        seed = int(seed)
    else:
        seed = None
    root = data_dir(data_dir_path)
    if root is None:
        return _load_from_hub(spec, split, seed)
    return _load_local(spec, split, seed, root.resolve())


def _relpath(split: str, seed: int | None) -> str:
    return f"{SHOTS}-{seed}/{split}.jsonl" if split in ("train", "dev") else f"{split}.jsonl"


def _load_local(spec: TaskSpec, split: str, seed: int | None, root: Path) -> TaskSplit:
    rel = _relpath(split, seed)
    path = root / spec.name / rel
    expected = _manifest_rows(root, spec.name, rel)
    if not path.is_file():
        if split in ("test", "pool") and expected is None:
            raise SplitUnavailableError(
                f"task {spec.name!r} has no {split} split in {root} (the mirror's manifest lists none); "
                + ("QQP has no test set: evaluate on dev, or choose another task"
                   if split == "test" else "pool files exist only for sst2, mrpc and rte")
            )
        raise DataNotFoundError(f"missing data file {path}; is {DATA_DIR_ENV} pointing at the full mirror?")
    stat = path.stat()
    raw, digest = _read_file(str(path), stat.st_size, stat.st_mtime_ns)
    rows = _parse_jsonl(raw, path, spec)
    if expected is not None and len(rows) != expected:
        raise DataIntegrityError(f"{path} has {len(rows)} rows but the manifest says {expected}")
    return TaskSplit(spec, split, seed, _to_dataset(rows, spec), str(path), digest)


@lru_cache(maxsize=64)
def _read_file(path: str, size: int, mtime_ns: int) -> tuple[bytes, str]:
    # size and mtime are part of the cache key: a file changed in place is read (and hashed) again
    raw = Path(path).read_bytes()
    return raw, hashlib.sha256(raw).hexdigest()


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    stat = path.stat()
    return _read_manifest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _read_manifest(path: str, size: int, mtime_ns: int) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataIntegrityError(f"{path} is not valid JSON ({exc.msg}); restore the mirror's manifest") from None


def _manifest_rows(root: Path, task: str, rel: str) -> int | None:
    entry = _manifest(root).get("tasks", {}).get(task, {})
    value = entry.get("files", {}).get(rel)
    return int(value) if value is not None else None


def _parse_jsonl(raw: bytes, path: Path, spec: TaskSpec) -> list[dict]:
    rows = []
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataIntegrityError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), int):
            raise DataIntegrityError(f"{path}:{lineno}: each row needs a string 'text' and an int 'label'")
        if not 0 <= row["label"] < spec.num_labels:
            raise DataIntegrityError(f"{path}:{lineno}: label {row['label']} outside 0..{spec.num_labels - 1}")
        if spec.pair and not isinstance(row.get("text_pair"), str):
            raise DataIntegrityError(f"{path}:{lineno}: pair task {spec.name!r} needs a string 'text_pair'")
        rows.append(row)
    return rows


def _to_dataset(rows: list[dict], spec: TaskSpec) -> Dataset:
    columns: dict[str, list] = {"text": [r["text"] for r in rows], "label": [int(r["label"]) for r in rows]}
    if spec.pair:
        columns["text_pair"] = [r["text_pair"] for r in rows]
    return Dataset.from_dict(columns)


def _load_from_hub(spec: TaskSpec, split: str, seed: int | None) -> TaskSplit:
    src = spec.hub
    if split == "test" and src.test_split is None:
        raise SplitUnavailableError(f"task {spec.name!r} has no labelled test split on the hub")
    hub_split = src.test_split if split == "test" else src.train_split
    try:
        import datasets

        ds = datasets.load_dataset(src.path, src.name, split=hub_split)
    except Exception as exc:  # the hub raises many kinds of errors when offline
        raise HubUnavailableError(
            f"could not load {src.path}/{src.name or ''} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"Set {DATA_DIR_ENV} to a local copy of the benchmark mirror (e.g. ../shared/data)."
        ) from exc
    rows = []
    for r in ds:
        label = int(r["label"])
        if src.label_map:
            label = src.label_map.get(label, -1)
        if not 0 <= label < spec.num_labels:
            continue  # e.g. SNLI rows without a gold label
        row = {"text": r[src.text_field], "label": label}
        if src.pair_field:
            row["text_pair"] = r[src.pair_field]
        rows.append(row)
    if split in ("train", "dev"):
        rows = _sample_kshot(rows, spec.num_labels, seed, split)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return TaskSplit(spec, split, seed, _to_dataset(rows, spec), f"hub:{src.path}/{src.name or ''}", digest)


def _sample_kshot(rows: list[dict], num_labels: int, seed: int | None, split: str) -> list[dict]:
    """16 train + 16 dev rows per class, disjoint, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for label in range(num_labels):
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        chosen = rng.choice(len(idx), size=min(2 * SHOTS, len(idx)), replace=False)
        part = chosen[:SHOTS] if split == "train" else chosen[SHOTS:]
        out.extend(rows[idx[j]] for j in part)
    return out


def stratified_rows(labels: np.ndarray, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """All row indices of a split, or a fixed label-stratified subsample of ``max_rows`` of them (sorted).

    Each label keeps its share of the split (largest remainders round), rows drawn without replacement
    by ``numpy``'s generator of ``seed``: the same labels give the same rows on every machine, so a score on
    a subsample can be re-checked. Used where a full large split costs hours per prompt on a CPU (the lite
    tier's test rows, the template study).
    """
    labels = np.asarray(labels)
    if max_rows is None or len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    take = np.floor(counts / len(labels) * max_rows).astype(int)
    take[np.argsort(-(counts / len(labels) * max_rows - take))[: max_rows - take.sum()]] += 1  # largest remainders
    rows = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(rows))


def rows_fingerprint(rows: np.ndarray) -> str:
    """The sha256 of row indices (as little-endian int64): what a record states of the rows it was scored on."""
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()


def data_fingerprint(task: str | TaskSpec, seeds: tuple[int, ...] = SEEDS,
                     splits: tuple[str, ...] = ("train", "dev", "test"),
                     data_dir_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """sha256 of every file an evaluation reads, keyed by relative path (for leaderboard entries)."""
    spec = get_task(task)
    out: dict[str, str] = {}
    for split in splits:
        for seed in (seeds if split in ("train", "dev") else (None,)):
            try:
                s = load_split(spec, split, seed, data_dir_path)
            except SplitUnavailableError:
                continue
            out[f"{spec.name}/{_relpath(split, seed)}"] = s.sha256
    return out
