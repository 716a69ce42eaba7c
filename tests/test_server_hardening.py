"""The server probed as an attacker and a careless user would: shutdown, timeouts, free endpoints, a locked
or foreign key file, broken text, keys in URLs, keys revoked mid-request.

Servers run on 127.0.0.1 on a free port, started and stopped here, on the tiny random model. A "slow"
model is the tiny one with a sleep before each forward pass and one row per forward: its calls take
seconds while the CPU stays idle (a benchmark may be running next to the tests).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from promptgym.cli import main
from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.lm.transport import RetryPolicy, Transport
from promptgym.lm.wire import request_to_wire
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import serve_in_background

WORDS = (" great", " terrible")


def rows(n: int) -> tuple[tuple[str, str], ...]:
    return tuple(("", f"Review {i}: a film like no other. It was") for i in range(n))


def body(n_rows: int, prompt: tuple[int, ...] = (1, 2)) -> dict:
    return {"requests": [request_to_wire(ScoreRequest(TokenPrompt(prompt), rows(n_rows), WORDS)).model_dump()]}


def slow_lm(delay: float) -> LocalLM:
    """The tiny model, one row per forward pass and ``delay`` seconds of sleep before each (no caches, no memo)."""
    loaded = load_model("tiny-random-causal", "float32")
    loaded.model.register_forward_pre_hook(lambda module, args: time.sleep(delay))
    return LocalLM(loaded, chunk_size=1, memo=False, input_cache=False, prefix_cache=False)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(r: httpx.Response, status: int, type_: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["type"] == type_, r.text
    return r.json()["error"]["message"]


@pytest.fixture(scope="module")
def fast_lm() -> LocalLM:
    return LocalLM(load_model("tiny-random-causal", "float32"))


# ---------------------------------------------------------------------------------------------- the CLI server
SCRIPT = """
    import sys, time
    import promptgym.lm
    from promptgym.cli import main
    from promptgym.lm.local import LocalLM
    from promptgym.lm.presets import load_model

    def slow(name, dtype):  # `promptgym serve` with the tiny model made slow (see the test module)
        loaded = load_model("tiny-random-causal", "float32")
        loaded.model.register_forward_pre_hook(lambda module, args: time.sleep(0.1))
        return LocalLM(loaded, chunk_size=1, memo=False, input_cache=False, prefix_cache=False)

    promptgym.lm.get_lm = slow
    sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory) -> dict:
    """`promptgym serve` in a process of its own: a key sent in a query string, then SIGTERM while a
    3-second call is in flight. Returns what each party saw."""
    tmp = tmp_path_factory.mktemp("cli")
    db = tmp / "keys.db"
    store = KeyStore(db)
    key = store.add("alice", 10)
    store.close()
    script = tmp / "serve_slow.py"
    script.write_text(textwrap.dedent(SCRIPT))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, str(script), "serve", "--keys", str(db), "--port", str(port),
                             "--log-level", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {"key": key, "db": db}
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        out["query_only"] = httpx.get(f"{url}/v1/usage?api_key={key}", timeout=10).status_code
        out["query_and_header"] = httpx.get(f"{url}/v1/usage?api_key={key}", headers=bearer(key), timeout=10)

        def call() -> None:
            try:
                out["in_flight"] = httpx.post(url + "/v1/score", json=body(30), headers=bearer(key), timeout=60)
            except httpx.HTTPError as e:
                out["in_flight"] = e

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(1.0)  # the call runs ~3 s: 30 forwards of 0.1 s
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            httpx.get(url + "/health", timeout=2)
            out["accepting_after_sigterm"] = True
        except httpx.TransportError:
            out["accepting_after_sigterm"] = False
        thread.join(timeout=60)
        out["returncode"] = proc.wait(timeout=60)
        out["stdout"], out["stderr"] = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def test_sigterm_finishes_the_call_in_flight_and_exits_0(sigterm_run):
    answer = sigterm_run["in_flight"]
    assert isinstance(answer, httpx.Response), f"the call in flight got {answer!r}"
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["calls"] == 1
    assert sigterm_run["accepting_after_sigterm"] is False  # stopped accepting at once
    assert sigterm_run["returncode"] == 0, sigterm_run["stderr"][-2000:]
    assert KeyStore(sigterm_run["db"]).usage("alice")["calls"] == 1  # charged exactly the answered call
    assert "Traceback" not in sigterm_run["stderr"]


def test_access_log_never_holds_a_query_string(sigterm_run):
    key = sigterm_run["key"]
    assert sigterm_run["query_only"] == 401  # a key in the URL is refused...
    assert sigterm_run["query_and_header"].status_code == 200
    log = sigterm_run["stdout"] + sigterm_run["stderr"]  # uvicorn's access log goes to stdout
    assert "/v1/usage?[redacted]" in log and "/v1/score" in log  # the access log is on
    assert key not in log and key[3:20] not in log and "api_key" not in log  # ...and never logged


# ---------------------------------------------------------------------------------------------- timeouts
def test_a_timed_out_call_stops_its_model_work(tmp_path):
    """A 503'd (refunded) call must not keep the model worker busy: its forward passes stop."""
    lm = slow_lm(0.05)
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("hasty", 10)
    with serve_in_background(lm, store, request_timeout_s=0.4) as url, \
            httpx.Client(base_url=url, headers=bearer(key), timeout=30) as c:
        r = c.post("/v1/score", json=body(40))  # 40 forwards of >= 0.05 s: 2 s of work
        assert "timeout" in error_of(r, 503, "unavailable")
        before = lm.forward_passes
        time.sleep(0.6)
        assert lm.forward_passes - before <= 2, "the abandoned call kept running"
        assert c.get("/v1/usage").json()["calls"] == 0
        t0 = time.monotonic()
        assert c.post("/v1/score", json=body(1)).status_code == 200  # the worker is free again
        assert time.monotonic() - t0 < 1.0
        assert c.get("/v1/usage").json()["calls"] == 1
        assert lm.interrupt is None  # the hook is only set while a job runs


# ---------------------------------------------------------------------------------------------- embeddings
def test_embeddings_need_calls_left_and_are_rate_limited(fast_lm, tmp_path):
    """Free of charge, but not for a spent key, and not unmetered (default: 5 requests per second per key)."""
    store = KeyStore(tmp_path / "keys.db")
    one, many = store.add("one", 1), store.add("many", None)
    with serve_in_background(fast_lm, store) as url:
        c = httpx.Client(base_url=url, headers=bearer(one), timeout=30)
        assert c.post("/v1/embeddings", json={"ids": [1, 2]}).status_code == 200
        assert c.post("/v1/score", json=body(1)).status_code == 200  # the key's last call
        assert "0 of 1 calls left" in error_of(c.post("/v1/embeddings", json={"ids": [1]}), 429, "quota_exceeded")
        assert store.usage("one")["calls"] == 1  # embeddings are never charged
        d = httpx.Client(base_url=url, headers=bearer(many), timeout=30)
        answers = [d.post("/v1/embeddings", json={"ids": [3]}) for _ in range(8)]
        assert answers[0].status_code == 200
        limited = [r for r in answers if r.status_code == 429]
        assert limited, [r.status_code for r in answers]
        error_of(limited[0], 429, "rate_limited")
        assert int(limited[0].headers["retry-after"]) >= 1
        assert store.usage("many")["calls"] == 0


# ---------------------------------------------------------------------------------------------- the key store
LOCKER = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
          "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()")


def test_a_locked_key_store_answers_503_with_retry_after_and_the_client_retries(fast_lm, tmp_path):
    path = tmp_path / "keys.db"
    store = KeyStore(path, busy_timeout_s=0.3)
    key = store.add("patient", 5)
    with serve_in_background(fast_lm, store) as url:
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout.readline().strip() == "locked"
            r = httpx.post(url + "/v1/score", json=body(1), headers=bearer(key), timeout=30)
            assert "busy" in error_of(r, 503, "unavailable")
            assert r.headers["retry-after"] == "1"
            transport = Transport(url, key, retry=RetryPolicy(attempts=6, backoff=0.2))
            got: dict = {}
            thread = threading.Thread(target=lambda: got.update(answer=transport.post("/v1/score", body(1))))
            thread.start()
            time.sleep(0.8)
        finally:
            locker.stdin.close()  # the other process ends: its lock goes
            locker.wait(timeout=30)
        thread.join(timeout=60)
        assert got["answer"]["usage"]["calls"] == 1 and transport.retries >= 1
        assert store.usage("patient")["calls"] == 1  # the refused tries were not charged


@pytest.mark.parametrize("kind", ["not sqlite", "wrong schema", "another program's", "truncated"])
def test_serve_on_a_bad_key_file_is_one_line_exit_2_and_leaves_it_untouched(tmp_path, capsys, monkeypatch, kind):
    import sqlite3

    import promptgym.serve.running

    def never(*args, **kwargs) -> None:  # refused before the model loads, or this test would serve forever
        raise AssertionError("serve() was reached with a bad key file")

    monkeypatch.setattr(promptgym.serve.running, "serve", never)
    path = tmp_path / "keys.db"
    if kind == "not sqlite":
        path.write_text("name,calls\nalice,10\n")
    elif kind == "truncated":
        store = KeyStore(path)
        store.add("alice", 10)
        store.close()  # the last connection folds the WAL into the file
        path.write_bytes(path.read_bytes()[:1500])
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE keys (name TEXT, secret TEXT)" if kind == "wrong schema" else "CREATE TABLE runs (x)")
        db.commit()
        db.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["serve", "--keys", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("promptgym: error:") and "\n" not in err and str(path) in err, err
    assert path.read_bytes() == before[path.name]  # nothing written, no switch to WAL mode
    if kind != "truncated":  # (opening a WAL-mode file makes SQLite create its -wal and -shm files)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------------------------- input, keys
def test_lone_surrogates_answer_400_naming_the_field(fast_lm, tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("text", 10)
    good = body(2)["requests"][0]
    cases = [
        ("/v1/score", {"requests": [{**good, "segments": [["", "fine"], ["", "bad \ud800 text"]]}]},
         "requests[0].segments[1][1]"),
        ("/v1/score", {"requests": [good, {**good, "label_words": [" great", "\udfff"]}]},
         "requests[1].label_words[1]"),
        ("/v1/completions", {"prompt": ["fine", "x\udc80"], "max_tokens": 1}, "prompt[1]"),
    ]
    with serve_in_background(fast_lm, store) as url, httpx.Client(base_url=url, headers=bearer(key),
                                                                   timeout=30) as c:
        for path, payload, field in cases:
            raw = json.dumps(payload).encode("ascii")  # \ud800 escapes: valid JSON, not valid Unicode
            r = c.post(path, content=raw, headers={"content-type": "application/json"})
            message = error_of(r, 400, "invalid_request")
            assert field in message and "surrogate" in message, message
        assert store.usage("text")["calls"] == 0
        assert c.post("/v1/score", json=body(2)).status_code == 200


def test_a_key_revoked_while_its_request_waits_gets_401(tmp_path):
    lm = slow_lm(0.05)
    store = KeyStore(tmp_path / "keys.db")
    admin, victim = store.add("admin", None), store.add("victim", 100)
    got: dict = {}
    with serve_in_background(lm, store) as url:
        def post(name: str, key: str, n: int) -> None:
            got[name] = httpx.post(url + "/v1/score", json=body(n, prompt=(len(name),)), headers=bearer(key),
                                   timeout=30)

        first = threading.Thread(target=post, args=("admin", admin, 20))  # keeps the worker busy ~1 s
        first.start()
        time.sleep(0.3)
        second = threading.Thread(target=post, args=("victim", victim, 1))  # waits in the queue
        second.start()
        time.sleep(0.3)
        store.revoke("victim")
        first.join(timeout=30)
        second.join(timeout=30)
    assert got["admin"].status_code == 200
    error_of(got["victim"], 401, "unauthorized")
    assert store.get("victim").calls == 0
