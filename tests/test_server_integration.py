"""On the real model: the SST-2 manual prompt scored over HTTP gives the in-process predictions and scores."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.lm.wire import ScoreResponse, request_to_wire, result_from_wire
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import serve_in_background
from promptgym.tasks import get_task, load_split


@pytest.mark.integration
def test_sst2_manual_prompt_over_http_gives_the_in_process_predictions(smollm2, tmp_path):
    spec = get_task("sst2")
    data = load_split("sst2", "test")
    rows = slice(0, 32)
    segs = tuple(spec.causal.render(t) for t in data.texts[rows])
    requests = [ScoreRequest(TokenPrompt(()), segs, spec.causal.verbalizers),  # the template alone
                ScoreRequest(TokenPrompt(smollm2.encode(" Movie review:")), segs, spec.causal.verbalizers)]
    with smollm2.fast_paths(memo=False):
        want = smollm2.score(requests)
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("it", 2)
    served = LocalLM(load_model("smollm2-135m", "bfloat16"))  # an instance of its own: no shared memo
    with serve_in_background(served, store) as url:
        r = httpx.post(url + "/v1/score", json={"requests": [request_to_wire(q).model_dump() for q in requests]},
                       headers={"Authorization": f"Bearer {key}"}, timeout=120)
        assert r.status_code == 200, r.text
        body = ScoreResponse.model_validate(r.json())
        assert body.usage.remaining == 0
        info = httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {key}"}).json()
        assert info["weights_sha256"] == smollm2.weights_sha256 and info["dtype"] == "bfloat16"
    got = [result_from_wire(x) for x in body.results]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.predictions, w.predictions)
        assert g.logprobs.tobytes() == w.logprobs.tobytes()
