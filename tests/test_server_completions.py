"""/v1/completions (vLLM dialect, scoring only): each way of reading label log-probs gives LocalLM's scores."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import torch

from promptgym.lm import ScoreRequest, SoftPrompt, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import serve_in_background
from promptgym.tasks import get_task, load_split


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(client, reference LM, SST-2 request rows) with a fp32 tiny model served and one in process."""
    spec = get_task("sst2")
    segs = tuple(spec.causal.render(t) for t in load_split("sst2", "train", seed=13).texts[:10])
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    key = store.add("oai", None)
    ref = LocalLM(load_model("tiny-random-causal", "float32"))
    with serve_in_background(LocalLM(load_model("tiny-random-causal", "float32")), store) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c, ref, segs, tuple(spec.causal.verbalizers)


def complete(c: httpx.Client, **body) -> dict:
    r = c.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and out["usage"]["total_tokens"] >= out["usage"]["prompt_tokens"]
    return out


def reference(ref: LocalLM, req: ScoreRequest) -> np.ndarray:
    with ref.fast_paths(False, False, False):  # the plain path: what a row-by-row engine computes
        return ref.score([req])[0].logprobs


def test_logprob_token_ids_give_the_plain_path_bytes(setup):
    c, ref, segs, words = setup
    req = ScoreRequest(TokenPrompt(ref.encode(" A movie review:")), segs, words)
    rows, _, label_ids = ref.layout.build([req], ref.encode)
    out = complete(c, prompt=[list(r.ids) for r in rows], max_tokens=1, logprobs=0,
                   logprob_token_ids=label_ids[0], return_tokens_as_token_ids=True)
    assert len(out["choices"]) == len(rows)
    got = np.array([[ch["logprobs"]["top_logprobs"][0][f"token_id:{t}"] for t in label_ids[0]]
                    for ch in out["choices"]], dtype=np.float32)
    assert got.tobytes() == reference(ref, req).tobytes()
    first = out["choices"][0]
    assert first["logprobs"]["tokens"][0].startswith("token_id:") and first["finish_reason"] == "length"


def test_label_appended_with_prompt_logprobs_and_echo(setup):
    c, ref, segs, words = setup
    req = ScoreRequest(TokenPrompt(ref.encode(" Review")), segs[:4], words)
    rows, _, label_ids = ref.layout.build([req], ref.encode)
    want = reference(ref, req)
    for c_idx, label in enumerate(label_ids[0]):
        out = complete(c, prompt=[list(r.ids) + [label] for r in rows], max_tokens=0, echo=True, prompt_logprobs=0,
                       logprobs=0)
        for i, ch in enumerate(out["choices"]):
            entry = ch["prompt_logprobs"][-1][str(label)]
            assert entry["logprob"] == pytest.approx(float(want[i, c_idx]), abs=1e-5)
            assert entry["rank"] >= 1 and isinstance(entry["decoded_token"], str)
            assert ch["prompt_logprobs"][0] is None and len(ch["prompt_logprobs"]) == len(rows[i].ids) + 1
            lp = ch["logprobs"]  # echo: one entry per prompt token, the first without a log-prob
            assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(rows[i].ids) + 1
            assert lp["token_logprobs"][-1] == pytest.approx(entry["logprob"])
            assert ch["prompt_token_ids"] == list(rows[i].ids) + [label]


def test_full_vocabulary_logprobs(setup):
    c, ref, segs, words = setup
    req = ScoreRequest(TokenPrompt(()), segs[:2], words)
    rows, _, label_ids = ref.layout.build([req], ref.encode)
    out = complete(c, prompt=[list(r.ids) for r in rows], max_tokens=1, logprobs=-1, return_tokens_as_token_ids=True)
    want = reference(ref, req)
    for i, ch in enumerate(out["choices"]):
        top = ch["logprobs"]["top_logprobs"][0]
        assert len(top) == ref.vocab_size
        values = np.array(list(top.values()))
        assert np.log(np.exp(values).sum()) == pytest.approx(0.0, abs=1e-4)
        got = np.array([top[f"token_id:{t}"] for t in label_ids[0]], dtype=np.float32)
        assert got.tobytes() == want[i].tobytes()
        best = max(top, key=top.get)
        assert ch["logprobs"]["tokens"][0] == best  # the one "generated" token is the argmax


def test_prompt_embeds_score_soft_prompts(setup):
    c, ref, segs, words = setup
    rng = np.random.default_rng(0)
    soft = rng.normal(0, 0.02, (3, ref.embedding_dim)).astype(np.float32)
    req = ScoreRequest(SoftPrompt(soft), segs[:5], words)
    rows, _, label_ids = ref.layout.build([req], ref.encode)
    payload = []
    for row in rows:
        emb = ref.embed_tokens(row.ids)
        emb[row.soft_start:row.soft_start + len(soft)] = soft
        buf = io.BytesIO()
        torch.save(torch.from_numpy(emb), buf)
        payload.append(base64.b64encode(buf.getvalue()).decode())
    out = complete(c, prompt_embeds=payload, max_tokens=1, logprobs=2, logprob_token_ids=label_ids[0],
                   return_tokens_as_token_ids=True)
    got = np.array([[ch["logprobs"]["top_logprobs"][0][f"token_id:{t}"] for t in label_ids[0]]
                    for ch in out["choices"]])
    np.testing.assert_allclose(got, reference(ref, req), atol=1e-5)


def test_text_prompts_are_tokenized_by_the_server(setup):
    c, ref, _, _ = setup
    out = complete(c, prompt=["The movie was", "I think"], max_tokens=1, logprobs=3)
    ids = ref.encode("The movie was")
    lp = ref.next_token_logprobs([ids])[0]
    ch = out["choices"][0]
    assert ch["text"] == ref.decode([int(np.argmax(lp))])
    assert ch["logprobs"]["token_logprobs"][0] == pytest.approx(float(lp.max()))
    assert len(ch["logprobs"]["top_logprobs"][0]) == 3
    assert out["usage"]["prompt_tokens"] == len(ids) + len(ref.encode("I think"))
    assert complete(c, prompt="x", max_tokens=1, foo_unknown={"a": 1})["choices"][0]["index"] == 0  # extra: ignored
