"""Usage receipts end to end: ``evaluate`` against a real ``promptgym serve`` (127.0.0.1, a free port, the
tiny random model in bf16, one fresh key per seed) -> a submission whose runs carry signed receipts ->
``submit`` verifies them against ``leaderboards/trusted_keys`` -> the page marks the entry budget
verified. Then every kind of bad receipt is refused with one line and exit code 2, the board left as
it was: forged, replayed (another seed's, another entry's), truncated, re-signed by an untrusted key,
over the tier, and another key's.

The run uses ``cma_elbo`` (a 3-member prompt set, soft prompts) under a 40-call test tier, so the
check that *each member* was scored under the receipt is exercised. Scores mean nothing here.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from promptgym.bench import schema
from promptgym.bench.receipts import budget_verified, trusted_keys
from promptgym.cli import main
from promptgym.errors import ConfigError
from promptgym.lm.base import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.lm.receipts import canonical_json, chain_start, extend, fingerprint
from promptgym.lm.remote import RemoteLM
from promptgym.serve.keys import KeyStore
from promptgym.serve.receipts import ReceiptSigner, signing_key_path
from promptgym.serve.running import serve_in_background

ENV = "PromptSST2-Subspace-v0"
AGENT = ["--agent", "cma_elbo", "--env-kwarg", "intrinsic_dim=16", "--env-kwarg", "prompt_length=4",
         "--agent-kwarg", "samples=2", "--agent-kwarg", "popsize=4", "--agent-kwarg", "members=3",
         "--agent-kwarg", "dev_every=2"]
TIER, CALLS = "unit40", 40
ROOM = 30  # the harness's scoring of the 3 members on test and 4 OOD tasks after the search (15 calls)
SEEDS = schema.BENCH_SEEDS


@pytest.fixture(scope="module")
def tier():
    schema.TIERS[TIER] = CALLS
    schema.TIERS["unit10"] = 10
    yield TIER
    del schema.TIERS[TIER], schema.TIERS["unit10"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_server):
    """The tiny model in bf16 (its own instance) behind a server; one key per seed, and two spare keys."""
    folder = tmp_path_factory.mktemp("server")
    store = KeyStore(folder / "keys.db")
    keys = {seed: store.add(f"sst2-seed-{seed}", CALLS + ROOM) for seed in SEEDS}
    keys["other"] = store.add("other", 30)
    keys["spare"] = store.add("spare", 10)
    return tiny_server(store, "bfloat16"), keys, store


def _new_board(root: Path, url: str) -> Path:
    """A leaderboard that trusts the server's key (what `promptgym keys pubkey` prints)."""
    (root / "leaderboards" / "trusted_keys").mkdir(parents=True)
    pem = httpx.get(f"{url}/v1/receipt/public-key").json()["public_key"]
    (root / "leaderboards" / "trusted_keys" / "test-server.pub").write_text(pem)
    return root


@pytest.fixture(scope="module")
def board(tmp_path_factory, served):
    return _new_board(tmp_path_factory.mktemp("board"), served[0])


@pytest.fixture(scope="module")
def submission(tier, served, tmp_path_factory):
    """`promptgym evaluate` seed by seed, each with its own key, then once more to assemble the file."""
    url, keys, _ = served
    work = tmp_path_factory.mktemp("work")
    args = ["evaluate", "--env", ENV, *AGENT, "--tier", TIER, "--model", url, "--workdir", str(work),
            "--out", str(work / "sub.json"), "--no-progress", "--submitter", "ci"]
    with pytest.MonkeyPatch.context() as mp:
        for seed in SEEDS:
            mp.setenv("PROMPTGYM_API_KEY", keys[seed])
            assert main([*args, "--seeds", str(seed)]) == 0
        assert main(args) == 0  # every seed cached: assembles the submission (the last key still answers)
    return work, json.loads((work / "sub.json").read_text())


def _submit(sub: dict, root: Path, tmp_path: Path, name: str = "sub.json") -> int:
    path = tmp_path / name
    path.write_text(json.dumps(sub))
    return main(["submit", str(path), "--root", str(root), "--no-render"])


def _entries(root: Path) -> list[str]:
    folder = root / "leaderboards" / ENV
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------- the server
def test_receipt_is_signed_free_and_never_holds_the_key(tmp_path, fresh_cache):
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("alice", 2)
    lm = LocalLM(load_model("tiny-random-causal", "float32"))
    request = ScoreRequest(TokenPrompt((5, 6)), (("good film", " It was"),), ("bad", "good"), False)
    with serve_in_background(lm, store) as url:
        client = RemoteLM(url, key)
        client.score([request, request])
        with pytest.raises(Exception, match="quota"):
            client.score([request])  # refused: not charged, not in the chain
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            assert http.post("/v1/score", json={"requests": []}).status_code == 400
        answer = client.receipt(after=0)  # a spent key still gets its receipt, free of charge
        assert client.remaining_calls() == 0
        pub = httpx.get(f"{url}/v1/receipt/public-key").json()
    body = answer.receipt.model_dump()
    assert body["calls"] == 2 and body["examples"] == 2 and body["key"] == "alice"
    assert body["model_sha256"] == lm.weights_sha256 and body["dtype"] == "float32"
    assert key not in json.dumps(answer.model_dump(by_alias=True)) and key not in json.dumps(pub)
    assert extend(answer.log.head, [_entry(e) for e in answer.log.entries]) == body["head"]
    assert answer.log.head == chain_start(body["key_id"])
    signer = ReceiptSigner.load_or_create(signing_key_path(tmp_path / "keys.db"))
    assert signer.fingerprint == pub["signer"] == body["signer"]
    assert stat.S_IMODE(signer.path.stat().st_mode) == 0o600
    raw = base64.b64decode(answer.signature)
    signer.public_key.verify(raw, canonical_json(body))  # raises if the signature does not match

    # the chain is in the key store's file: a restarted server continues it
    store2 = KeyStore(tmp_path / "keys.db")
    with serve_in_background(LocalLM(load_model("tiny-random-causal", "float32")), store2) as url:
        again = RemoteLM(url, key).receipt()
    assert again.receipt.calls == 2 and again.receipt.head == body["head"]
    store.close()


def _entry(e):
    from promptgym.lm.receipts import Entry

    return Entry(*e[:3])


def test_signing_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "keys.db.receipt-key.pem"
    signer = ReceiptSigner.load_or_create(path)
    assert ReceiptSigner.load_or_create(path).fingerprint == signer.fingerprint  # made once, then read
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ReceiptSigner.load_or_create(path)


def test_keys_pubkey_prints_the_servers_public_key(tmp_path, capsys):
    assert main(["keys", "pubkey", "--keys", str(tmp_path / "keys.db")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PUBLIC KEY-----")
    signer = ReceiptSigner.load_or_create(signing_key_path(tmp_path / "keys.db"))
    assert out == signer.public_pem()


# ---------------------------------------------------------------------------------------------- end to end
def test_evaluate_records_receipts_and_submit_marks_the_entry_budget_verified(submission, served, board, tmp_path,
                                                                                 capsys):
    work, sub = submission
    _, keys, _ = served
    assert sub["model"]["name"] == "tiny-random-causal"
    text = json.dumps(sub) + "".join(p.read_text() for p in work.glob("seed-*.json"))
    assert not any(key in text for key in keys.values())  # a receipt never holds a key
    for run in sub["runs"]:
        receipt = run["receipt"]
        assert receipt["body"]["calls"] - len(receipt["entries"]) <= CALLS
        assert len(receipt["entries"]) == 3 * (1 + 4)  # 3 members on test and on the 4 OOD tasks
    cached = json.loads((work / "seed-13.json").read_text())
    assert len(cached["extra"]["receipt_requests"]) == cached["receipt"]["body"]["calls"]
    assert cached["extra"]["search_receipt"]["receipt"]["calls"] == cached["receipt"]["body"]["calls"] - 15

    assert _submit(sub, board, tmp_path) == 0
    assert "budget verified" in capsys.readouterr().out
    assert len(_entries(board)) == 1
    assert budget_verified(sub, trusted_keys(board))
    assert main(["leaderboard", "--root", str(board)]) == 0
    page = (board / "leaderboards" / "index.html").read_text(encoding="utf-8")
    assert 'title="budget verified: signed usage receipts"' in page and "✓</td>" in page
    readme = (board / "leaderboards" / "README.md").read_text(encoding="utf-8")
    assert " ✓ |" in readme


def _refused(sub: dict, board: Path, tmp_path: Path, capsys, *fragments: str) -> None:
    before = _entries(board)
    capsys.readouterr()
    assert _submit(sub, board, tmp_path, "bad.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert _entries(board) == before


def _resign(receipt: dict, key: Ed25519PrivateKey) -> None:
    receipt["body"]["signer"] = fingerprint(key.public_key())
    receipt["signature"] = base64.b64encode(key.sign(canonical_json(receipt["body"]))).decode("ascii")


@pytest.fixture
def bad(submission):
    sub = copy.deepcopy(submission[1])
    sub["submitter"] = "someone else"  # another file than the accepted entry
    return sub


def test_forged_receipt_is_refused(bad, board, tmp_path, capsys, submission):
    bad["runs"][1]["receipt"]["body"]["calls"] -= 5
    _refused(bad, board, tmp_path, capsys, "runs[1].receipt.signature", "does not match")


def test_receipt_replayed_from_another_seed_is_refused(bad, board, tmp_path, capsys):
    bad["runs"][1]["receipt"] = copy.deepcopy(bad["runs"][0]["receipt"])
    _refused(bad, board, tmp_path, capsys, "runs[1].receipt.body.key_id", "also signs runs[0]")


def test_receipt_replayed_from_an_accepted_entry_is_refused(bad, board, tmp_path, capsys,
                                                          test_evaluate_entry_accepted):
    _refused(bad, board, tmp_path, capsys, "runs[0].receipt.body.key_id", "already signs a run of the accepted entry")


@pytest.fixture
def test_evaluate_entry_accepted(board, submission, tmp_path_factory):
    """The honest entry is on the board (the end-to-end test puts it there; alone, this does)."""
    if not _entries(board):
        assert _submit(submission[1], board, tmp_path_factory.mktemp("honest")) == 0


def test_truncated_receipt_is_refused(bad, board, tmp_path, capsys):
    del bad["runs"][2]["receipt"]["entries"][-1]
    _refused(bad, board, tmp_path, capsys, "runs[2].receipt.entries", "do not lead to the signed head")


def test_receipt_resigned_by_an_untrusted_key_is_refused(bad, board, tmp_path, capsys):
    receipt = bad["runs"][3]["receipt"]
    receipt["body"]["calls"] -= 5
    _resign(receipt, Ed25519PrivateKey.generate())
    _refused(bad, board, tmp_path, capsys, "runs[3].receipt.body.signer", "does not trust")


def test_receipt_over_the_tier_is_refused(bad, board, tmp_path, capsys):
    # claim the 10-call tier: calls_used and curves fit it, but the server counted more
    bad["tier"], bad["budget_calls"] = "unit10", 10
    for run in bad["runs"]:
        run["calls_used"] = min(run["calls_used"], 10)
        run["curve"] = [p for p in run["curve"] if p[0] <= 10]
    _refused(bad, board, tmp_path, capsys, "runs[0].receipt.body.calls", "the 'unit10' tier allows 10")


def test_another_keys_receipt_is_refused(bad, board, served, tmp_path, capsys):
    url, keys, _ = served
    other = RemoteLM(url, keys["other"])
    other.score([ScoreRequest(TokenPrompt((3, i)), (("fine", " It was"),), ("bad", "good"), False) for i in range(20)])
    signed = other.receipt().model_dump(by_alias=True)  # valid, by the trusted server, for another key
    bad["runs"][4]["receipt"]["body"] = signed["receipt"]
    bad["runs"][4]["receipt"]["signature"] = signed["signature"]
    _refused(bad, board, tmp_path, capsys, "runs[4].receipt.entries", "do not lead to the signed head")


def test_receipt_of_other_prompts_is_refused(bad, served, tmp_path, capsys):
    """A genuine receipt of a key that scored other prompts than the run submits (on an empty board)."""
    url, keys, _ = served
    board = _new_board(tmp_path / "empty", url)
    spare = RemoteLM(url, keys["spare"])
    spare.score([ScoreRequest(TokenPrompt((4,)), (("fine", " It was"),), ("bad", "good"), False)])
    answer = spare.receipt(after=0).model_dump(by_alias=True)
    from promptgym.lm.receipts import run_proof

    bad["runs"][0]["receipt"] = run_proof(answer, 0)
    _refused(bad, board, tmp_path, capsys, "runs[0].prompt.members[0]", "not in the chain")


def test_a_receipt_for_some_runs_only_is_refused(bad, board, tmp_path, capsys):
    del bad["runs"][2]["receipt"]
    _refused(bad, board, tmp_path, capsys, "runs[2].receipt: missing")


def test_entries_without_receipts_keep_todays_status(board):
    from test_bench_schema import make_submission

    assert not budget_verified(make_submission(), trusted_keys(board))
