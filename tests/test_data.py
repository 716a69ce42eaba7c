"""Loading the real benchmark splits from the offline mirror, and every named data error."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from promptgym.errors import (
    DataIntegrityError,
    DataNotFoundError,
    HubUnavailableError,
    SplitUnavailableError,
    UnknownSeedError,
    UnknownTaskError,
)
from promptgym.tasks import SEEDS, TASK_NAMES, data_fingerprint, get_task, load_split

POOL_TASKS = ("sst2", "mrpc", "rte")


@pytest.fixture(scope="module")
def manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / "manifest.json").read_text())


def test_catalog_matches_manifest(manifest):
    assert set(TASK_NAMES) == set(manifest["tasks"]) and len(TASK_NAMES) == 11
    assert tuple(manifest["seeds"]) == SEEDS
    for name, entry in manifest["tasks"].items():
        spec = get_task(name)
        assert list(spec.labels) == entry["labels"], name
        assert spec.pair == entry["pair"], name
        assert spec.metric == entry["metric"], name


@pytest.mark.parametrize("task", TASK_NAMES)
def test_kshot_splits_load_with_manifest_counts(task, manifest, data_dir):
    spec = get_task(task)
    files = manifest["tasks"][task]["files"]
    for seed in SEEDS:
        train = load_split(task, "train", seed)
        dev = load_split(task, "dev", seed)
        for split in (train, dev):
            rel = f"16-{seed}/{split.split}.jsonl"
            assert len(split) == files[rel] == 16 * spec.num_labels
            assert Counter(split.labels) == dict.fromkeys(range(spec.num_labels), 16), (task, rel)
            assert split.seed == seed
            assert Path(split.source) == (data_dir / task / rel).resolve()
            assert all(isinstance(t, str) and t for t in split.texts)
            if spec.pair:
                assert all(isinstance(t, str) for t in split.text_pairs)
            else:
                assert split.text_pairs == [None] * len(split)
        assert train.sha256 != dev.sha256


@pytest.mark.parametrize("task", TASK_NAMES)
def test_test_split_loads_with_manifest_counts(task, manifest):
    entry = manifest["tasks"][task]
    if task == "qqp":
        assert "test.jsonl" not in entry["files"]
        with pytest.raises(SplitUnavailableError, match="QQP has no test set"):
            load_split(task, "test")
        return
    test = load_split(task, "test")
    assert len(test) == entry["files"]["test.jsonl"]
    assert test.seed is None
    assert [Counter(test.labels)[i] for i in range(get_task(task).num_labels)] == entry["test_label_counts"]


def test_known_test_sizes():
    assert len(load_split("sst2", "test")) == 872
    assert len(load_split("agnews", "test")) == 7600
    assert len(load_split("rte", "test")) == 277


def test_seed_is_ignored_for_test():
    assert load_split("rte", "test", seed=42).sha256 == load_split("rte", "test").sha256


@pytest.mark.parametrize("task", TASK_NAMES)
def test_pool_exists_only_for_sst2_mrpc_rte(task, manifest):
    if task in POOL_TASKS:
        pool = load_split(task, "pool")
        assert len(pool) == manifest["tasks"][task]["files"]["pool.jsonl"]
    else:
        with pytest.raises(SplitUnavailableError, match="pool files exist only for sst2, mrpc and rte"):
            load_split(task, "pool")


def test_pool_sizes():
    assert len(load_split("sst2", "pool")) == 67349
    assert len(load_split("mrpc", "pool")) == 3668
    assert len(load_split("rte", "pool")) == 2490


@pytest.mark.parametrize("task,split,seed", [("sst2", "train", 42), ("mrpc", "dev", 13), ("agnews", "test", None)])
def test_sha256_is_stable_and_is_the_file_hash(task, split, seed):
    a = load_split(task, split, seed)
    b = load_split(task, split, seed)
    assert a.sha256 == b.sha256
    assert a.sha256 == hashlib.sha256(Path(a.source).read_bytes()).hexdigest()


def test_data_fingerprint_lists_every_file_read(data_dir):
    fp = data_fingerprint("rte")
    assert len(fp) == 2 * len(SEEDS) + 1
    for rel, digest in fp.items():
        assert digest == hashlib.sha256((data_dir / rel).read_bytes()).hexdigest()
    qqp = data_fingerprint("qqp")
    assert "qqp/test.jsonl" not in qqp and len(qqp) == 2 * len(SEEDS)


def test_hash_follows_a_file_changed_in_place(tmp_path, data_dir):
    _copy(data_dir, tmp_path, "sst2/16-42/train.jsonl")
    path = tmp_path / "sst2/16-42/train.jsonl"
    before = load_split("sst2", "train", 42, tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same rows, new order, new bytes
    after = load_split("sst2", "train", 42, tmp_path)
    assert after.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != before.sha256
    assert after.texts[-1] == before.texts[0]


# ----------------------------------------------------------------------------------- named errors
def test_unknown_task_lists_the_tasks():
    with pytest.raises(UnknownTaskError) as info:
        load_split("imdb", "train", 42)
    for name in TASK_NAMES:
        assert name in str(info.value)
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("seed", [7, 0, 43])
def test_unknown_seed(seed):
    with pytest.raises(UnknownSeedError, match="13, 21, 42, 87, 100"):
        load_split("sst2", "train", seed)


def test_kshot_split_needs_a_seed():
    with pytest.raises(UnknownSeedError, match="needs a seed"):
        load_split("sst2", "dev")


def test_unknown_split_name():
    with pytest.raises(SplitUnavailableError, match="unknown split 'validation'"):
        load_split("sst2", "validation")


def test_missing_data_dir_argument(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_split("sst2", "train", 42, tmp_path / "nowhere")


def test_missing_data_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTGYM_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="PROMPTGYM_DATA_DIR"):
        load_split("sst2", "test")


def test_missing_file_listed_in_manifest(tmp_path, data_dir):
    shutil.copy(data_dir / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(DataNotFoundError, match="missing data file"):
        load_split("sst2", "train", 42, tmp_path)


def test_absent_split_in_a_local_dir(tmp_path, data_dir):
    shutil.copy(data_dir / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(SplitUnavailableError):
        load_split("qqp", "test", data_dir_path=tmp_path)
    with pytest.raises(SplitUnavailableError):
        load_split("cola", "pool", data_dir_path=tmp_path)


def _copy(src_root: Path, dst_root: Path, rel: str) -> Path:
    shutil.copy(src_root / "manifest.json", dst_root / "manifest.json")
    dst = dst_root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src_root / rel, dst)
    return dst


def test_corrupted_copy_loads_when_intact(tmp_path, data_dir):
    _copy(data_dir, tmp_path, "rte/16-13/train.jsonl")
    split = load_split("rte", "train", 13, tmp_path)
    assert split.sha256 == load_split("rte", "train", 13).sha256


def test_row_count_mismatch_is_an_integrity_error(tmp_path, data_dir):
    path = _copy(data_dir, tmp_path, "rte/16-13/train.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataIntegrityError, match="31 rows but the manifest says 32"):
        load_split("rte", "train", 13, tmp_path)


def test_bad_json_is_an_integrity_error(tmp_path, data_dir):
    path = _copy(data_dir, tmp_path, "sst2/test.jsonl")
    lines = path.read_text().splitlines()
    lines[5] = lines[5][:-7]  # truncated line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataIntegrityError, match=r"test.jsonl:6: not valid JSON"):
        load_split("sst2", "test", data_dir_path=tmp_path)


@pytest.mark.parametrize("row,match", [
    ({"text": "fine", "label": 5}, "outside 0..1"),
    ({"text": "fine", "label": "1"}, "int 'label'"),
    ({"label": 1}, "string 'text'"),
])
def test_bad_rows_are_integrity_errors(tmp_path, data_dir, row, match):
    path = _copy(data_dir, tmp_path, "sst2/16-21/dev.jsonl")
    lines = path.read_text().splitlines()
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataIntegrityError, match=match):
        load_split("sst2", "dev", 21, tmp_path)


def test_pair_task_row_without_text_pair(tmp_path, data_dir):
    path = _copy(data_dir, tmp_path, "mrpc/16-87/dev.jsonl")
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    del row["text_pair"]
    lines[3] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataIntegrityError, match="text_pair"):
        load_split("mrpc", "dev", 87, tmp_path)


def test_bad_manifest_json_is_an_integrity_error(tmp_path, data_dir):
    _copy(data_dir, tmp_path, "sst2/16-42/train.jsonl")
    (tmp_path / "manifest.json").write_text('{"tasks": {')
    with pytest.raises(DataIntegrityError, match="manifest.json is not valid JSON"):
        load_split("sst2", "train", 42, tmp_path)


def test_no_data_dir_and_offline_hub(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.delenv("PROMPTGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # both libraries read HF_HUB_OFFLINE once, at import time: patch the values they already read
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError) as info:
        load_split("sst2", "train", 42)
    assert "PROMPTGYM_DATA_DIR" in str(info.value)
    assert isinstance(info.value, ConnectionError)
