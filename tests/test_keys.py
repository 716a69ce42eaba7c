"""The key store: hashed keys, constant-time check, atomic quota reservation across threads and processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading

import pytest

from promptgym.cli import main
from promptgym.errors import ConfigError
from promptgym.serve.keys import KeyStore, hash_key


def test_key_is_returned_once_and_only_its_hash_is_stored(tmp_path):
    path = tmp_path / "keys.db"
    store = KeyStore(path)
    key = store.add("alice", 10)
    assert key.startswith("pg-") and len(key) > 40
    assert store.authenticate(key) == "alice"
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in raw  # not in the database, its WAL or shared memory
    rows = sqlite3.connect(path).execute("SELECT key_sha256 FROM keys").fetchall()
    assert [bytes(r[0]) for r in rows] == [hash_key(key)]


def test_store_is_in_wal_mode(tmp_path):
    KeyStore(tmp_path / "keys.db").add("alice", 1)
    assert sqlite3.connect(tmp_path / "keys.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_authenticate_rejects_unknown_malformed_and_revoked_keys(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("alice", None)
    other = store.add("bob", 5)
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("") is None and store.authenticate("x" * 10_000) is None
    assert store.authenticate(other) == "bob"
    store.revoke("bob")
    assert store.authenticate(other) is None
    assert store.authenticate(key) == "alice"
    assert not store.reserve("bob", 1)  # a revoked key is never charged


def test_add_rejects_bad_names_quotas_and_duplicates(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    store.add("alice", 1)
    for name, calls in [("alice", 1), ("", 1), ("a b", 1), ("x" * 65, 1), ("ok", -1), ("ok", 2.5), ("ok", True)]:
        with pytest.raises(ConfigError):
            store.add(name, calls)
    with pytest.raises(ConfigError):
        store.revoke("nobody")
    with pytest.raises(ConfigError):
        KeyStore(tmp_path / "missing" / "keys.db")


def test_reserve_is_all_or_nothing_and_refund_gives_back(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    store.add("alice", 5)
    assert store.reserve("alice", 3)
    assert not store.reserve("alice", 3)  # 3 + 3 > 5: nothing charged
    assert store.usage("alice") == {"key": "alice", "calls": 3, "quota": 5, "remaining": 2}
    assert store.reserve("alice", 2)
    assert not store.reserve("alice", 1)
    store.refund("alice", 2)
    assert store.usage("alice")["calls"] == 3
    assert store.get("alice").requests == 1  # the refunded request is not counted either


def test_reservations_from_many_threads_never_exceed_the_quota(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    store.add("alice", 300)
    granted = []

    def client():
        granted.append(sum(store.reserve("alice", 1) for _ in range(50)))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 300 and store.usage("alice")["calls"] == 300


def _reserve_many(path: str, n: int, out) -> None:
    store = KeyStore(path)
    out.put(sum(store.reserve("alice", 1) for _ in range(n)))


def test_reservations_from_two_processes_never_exceed_the_quota(tmp_path):
    path = str(tmp_path / "keys.db")
    KeyStore(path).add("alice", 70)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(path, 50, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(got) == 70 and KeyStore(path).usage("alice")["calls"] == 70


def test_usage_survives_reopening_the_store(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    store.add("alice", 10)
    assert store.reserve("alice", 4)
    store.close()
    again = KeyStore(tmp_path / "keys.db")
    assert again.usage("alice") == {"key": "alice", "calls": 4, "quota": 10, "remaining": 6}


def test_cli_keys_add_list_revoke(tmp_path, capsys):
    db = str(tmp_path / "keys.db")
    assert main(["keys", "add", "alice", "--calls", "7", "--keys", db]) == 0
    key = capsys.readouterr().out.strip()
    assert KeyStore(db).authenticate(key) == "alice"
    assert main(["keys", "list", "--keys", db]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and key not in listing and "7" in listing
    assert main(["keys", "revoke", "alice", "--keys", db]) == 0
    assert KeyStore(db).authenticate(key) is None
    capsys.readouterr()
    for argv in (["keys", "add", "alice", "--calls", "1", "--keys", db],  # the name exists
                 ["keys", "add", "bob", "--calls", "-3", "--keys", db],
                 ["keys", "add", "bob", "--calls", "many", "--keys", db],
                 ["keys", "revoke", "nobody", "--keys", db],
                 ["keys", "list", "--keys", str(tmp_path / "no" / "keys.db")],
                 ["serve", "--keys", db, "--max-rows", "0"],
                 ["serve", "--keys", db, "--request-timeout-s", "nan"],
                 ["serve", "--keys", db, "--port", "70000"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("promptgym: error:") and "\n" not in err, (argv, err)
