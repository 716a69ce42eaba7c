"""A model served by an OpenAI-compatible completions server (vLLM and the like) as a black box.

This is how a user outgrows one machine: a large causal LM on GPU servers, scored by an engine built
for that, behind the same :class:`~promptgym.lm.base.BlackBoxLM` contract as the in-process model.

* **Rows are ours.** The client tokenises locally and builds every example's row with
  :mod:`promptgym.lm.layout`, the code the in-process backend scores, and sends token ids. Each row is
  one prompt of ``/v1/completions``; the label word is scored at the first generated position.
* **How prompts travel**, probed once before anything else (:attr:`OpenAICompatLM.prompt_form`,
  :attr:`OpenAICompatLM.batched`): token ids, several prompts per POST (vLLM, ``promptgym serve``);
  token ids one prompt per POST; else text. llama.cpp's server (llama-cpp-python) takes only a
  string, or a list of at most one string. Text is sent only when it stands for exactly our row: each
  row's ids are decoded and re-tokenised locally and must come back unchanged (else a ConfigError says
  why), and the probe checks that the server counts as many prompt tokens as the row has, so a
  server that adds its own BOS to text is caught (refused, unless our row starts with that BOS, which
  is then left to the server).
* **The best exact method the server has**, probed once (or forced with ``method=``):

  1. ``"token_ids"``: ``logprob_token_ids`` asks for the log-probs of the label ids at the first
     generated position (an extension our server has; one prompt per row);
  2. ``"prompt_logprobs"``: the label token appended to the row, read back with ``echo`` +
     ``prompt_logprobs`` (vLLM has it; one prompt per row *and label*);
  3. ``"full_vocab"``: ``logprobs=-1``, the whole next-token distribution (vLLM started with
     ``--max-logprobs -1``; large answers);
  4. ``"logit_bias"``: each label forced as the generated token by ``logit_bias`` +100 and its
     log-prob read from ``token_logprobs`` (one prompt per row *and label*). Exact on engines whose
     log-probs come from the raw logits, as llama.cpp's server (started with ``--logits_all true``)
     and vLLM's default report them; the client checks that the generated token is the label and
     that the labels' probabilities sum to at most 1 (a server reporting biased log-probs fails);
  5. ``"top_k"``: only the top ``top_k`` log-probs (hosted APIs). A label outside them gets the mass
     the top-k leave, spread evenly over the other tokens: **approximate** scores, flagged in every
     result (``ScoreResult.extra["approximate"] = True``) and in :attr:`OpenAICompatLM.approximate`;
     ``promptgym submit`` refuses them.

* **Soft prompts** travel as ``prompt_embeds`` (base64 of a ``torch.save``d ``(L, d)`` tensor, vLLM
  started with ``--enable-prompt-embeds``): the whole row as input embeddings, the prompt's vectors
  in place. Such a server hands out no embeddings, so the client reads the model's input-embedding
  matrix itself from a path or Hugging Face id named by ``embeddings=`` (only that one tensor is read
  from the safetensors files). A row given as embeddings has no token ids, so prompt log-probs cannot
  name the label: with method 2 soft rows are read from ``logprobs=-1`` (probed when first needed).
* **Masked LMs** are refused: a completions server predicts the next token only.
* Against ``promptgym serve``, each prompt of a completions request is one API call charged to the
  key, i.e. one *row* here (a 32-example request costs 32 calls, or 64 with two labels and method 2),
  and the probe costs a few; use our native protocol (:class:`promptgym.lm.remote.RemoteLM`) when
  the key's quota matters.
* The rows of all requests of one ``score()`` call go out together, ``max_prompts`` per POST, so an
  engine batches a whole population at once.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.errors import BudgetExhausted, ConfigError, InvalidRequestError, RequestTooLargeError, ServiceError
from promptgym.lm.base import BlackBoxLM, ScoreRequest, ScoreResult, SoftPrompt
from promptgym.lm.layout import Row, RowLayout, check_token_ids, label_result
from promptgym.lm.tokenizer import TokenizerMixin
from promptgym.lm.transport import RetryPolicy, Transport, clip, resolve_api_key

#: scoring methods, best first (see the module docstring)
METHODS = ("token_ids", "prompt_logprobs", "full_vocab", "logit_bias", "top_k")
#: how rows can travel, best first: (prompt form, several prompts per POST)
PROMPT_FORMS = (("ids", True), ("ids", False), ("text", True), ("text", False))
#: the logit bias that makes a label the greedy token ("logit_bias" method; OpenAI's and vLLM's upper limit)
FORCE_BIAS = 100.0
#: longest row when neither the caller nor the server says (LocalLM's cap)
DEFAULT_MAX_LENGTH = 1024
#: what an ``openai+http://...`` model URL's query may set (arguments of :class:`OpenAICompatLM`)
URL_OPTIONS = {"model": str, "tokenizer": str, "embeddings": str, "method": str, "top_k": int, "max_length": int,
               "max_prompts": int}


def parse_url(url: str) -> tuple[str, dict]:
    """``(base_url, options)`` of ``openai+http://host:port?tokenizer=...&embeddings=...`` (or https),
    checked without any network call; the query sets :data:`URL_OPTIONS` (``method``, ``top_k``, ...).

    The API key never goes in the URL (URLs are recorded in run folders): pass ``api_key=`` or set
    ``$PROMPTGYM_API_KEY``.
    """
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    from promptgym.lm.transport import check_base_url

    scheme, rest = url.split("://", 1)
    parts = urlsplit(f"{scheme.split('+', 1)[1]}://{rest}")
    options: dict = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        kind = URL_OPTIONS.get(key)
        if kind is None:
            hint = "; pass the key as api_key=... or $PROMPTGYM_API_KEY" if "key" in key.lower() else ""
            raise ConfigError(f"unknown option {key!r} in {url!r}; options: {', '.join(URL_OPTIONS)}{hint}")
        if kind is int:
            if not value.isdigit():
                raise ConfigError(f"option {key} in {url!r} must be a whole number, got {value!r}")
            value = int(value)
        options[key] = value
    if options.get("method", "auto") not in ("auto", *METHODS):
        raise ConfigError(f"option method in {url!r} must be 'auto' or one of {METHODS}, got {options['method']!r}")
    return check_base_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))), options


# ---------------------------------------------------------------------------------------------- embeddings
def load_input_embeddings(source: Any) -> np.ndarray:
    """The input-embedding matrix ``(vocab, d)`` (float32) of a model, and nothing else of it: what its
    input-embedding module outputs per id (Gemma 3's module multiplies the table by ``sqrt(hidden)``).

    ``source``: an array; a promptgym preset name (the model is loaded once); or a local folder or
    Hugging Face id whose safetensors hold the weights: the embedding's parameter name is found on a
    weightless (meta-device) copy of the architecture, and only the file that holds it is read.
    """
    if isinstance(source, np.ndarray) or type(source).__name__ == "Tensor":
        emb = np.asarray(source.detach().float().cpu() if hasattr(source, "detach") else source, dtype=np.float32)
        if emb.ndim != 2 or not np.all(np.isfinite(emb)):
            raise ConfigError(f"embeddings must be a finite (vocab, dim) matrix, got shape {emb.shape}")
        return emb
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"embeddings must be a path, a Hugging Face id or an array, got {type(source).__name__}")
    import torch

    from promptgym.lm.presets import PRESETS, load_model

    if str(source) in PRESETS:
        loaded = load_model(str(source), "float32")
        if loaded.is_masked:
            raise ConfigError(masked_message(str(source)))
        embed = loaded.model.get_input_embeddings()  # its outputs (Gemma scales the table inside it)
        with torch.inference_mode():
            return embed(torch.arange(embed.weight.shape[0])).float().numpy().copy()
    return _embeddings_from_safetensors(str(source))


def _embeddings_from_safetensors(source: str) -> np.ndarray:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise ConfigError(f"cannot read a model config from {source!r} for its embeddings ({type(exc).__name__}); "
                          "name a local model folder or a Hugging Face id") from None
    if any(a.endswith("ForMaskedLM") for a in (config.architectures or [])):
        raise ConfigError(masked_message(source))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    weight = skeleton.get_input_embeddings().weight
    name = next(n for n, p in skeleton.named_parameters() if p is weight)
    index = _fetch(source, "model.safetensors.index.json", required=False)
    if index is not None:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        key = _match_key(name, weight_map)
        path = _fetch(source, weight_map[key])
    else:
        path = _fetch(source, "model.safetensors")
        key = None
    # the embedding module's outputs are the embedding space: Gemma 3's module scales the table by sqrt(hidden)
    scale = getattr(skeleton.get_input_embeddings(), "scalar_embed_scale", None)
    with safe_open(str(path), framework="pt") as fh:
        key = key or _match_key(name, list(fh.keys()))
        table = fh.get_tensor(key)
    if scale is not None and scale != 1.0:
        table = table * torch.tensor(scale, dtype=table.dtype)
    return table.float().numpy().copy()


def _match_key(name: str, keys) -> str:
    """The stored key of parameter ``name`` (checkpoints may add or drop a ``model.`` prefix)."""
    keys = list(keys)
    if name in keys:
        return name
    short = name.split(".", 1)[-1]
    found = [k for k in keys if k.endswith("." + short) or k == short or name.endswith("." + k)]
    if len(found) != 1:
        raise ConfigError(f"cannot find the input embeddings {name!r} among the checkpoint's tensors")
    return found[0]


def _fetch(source: str, filename: str, required: bool = True) -> Path | None:
    """A file of a local model folder or of a Hugging Face repo (downloaded to the hub cache)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / filename
        if path.is_file():
            return path
        if required:
            raise ConfigError(f"{folder} has no {filename}: embeddings are read from safetensors files")
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, filename))
    except Exception as exc:
        if required:
            raise ConfigError(f"cannot fetch {filename} of {source!r} ({type(exc).__name__})") from None
        return None


def masked_message(name: str) -> str:
    return (f"{name} is a masked LM; OpenAI-compatible completions servers score causal LMs only "
            "(serve it with `promptgym serve` and use the native protocol)")


def encode_prompt_embeds(embeds: np.ndarray) -> str:
    """An ``(L, d)`` matrix as vLLM's ``prompt_embeds``: base64 of a ``torch.save``d float32 tensor."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(embeds, dtype=np.float32)), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------- answers
def token_text(tokenizer, token_id: int) -> str | None:
    """The text a server prints for one token: its bytes as UTF-8, a leading space kept (llama.cpp's
    server, hosted APIs); None when no text names the token: a special token (llama.cpp prints it as
    ``""``) or bytes that are not whole UTF-8 characters (printed lossily, so tokens may share it).

    A token is decoded after an anchor token and the anchor's text removed: SentencePiece decoders drop
    the leading space of a text's first token, and Hugging Face's clean-up rewrites ``" ."`` as ``"."``.
    """
    if int(token_id) in set(getattr(tokenizer, "all_special_ids", None) or ()):
        return None
    anchor = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    base = tokenizer.decode(anchor, **options)
    joined = tokenizer.decode(anchor + [int(token_id)], **options)
    if not joined.startswith(base) or "\ufffd" in joined or len(joined) == len(base):
        return None
    return joined[len(base):]


def _logprob_value(value: Any) -> float:
    return float(value["logprob"] if isinstance(value, dict) else value)


def token_logprob(entries: dict | None, token_id: int, tokenizer=None) -> float | None:
    """The log-prob of ``token_id`` in a ``top_logprobs`` (or vLLM ``prompt_logprobs``) entry, whatever
    the server's key style.

    ``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``) is exact, and so is ``"123"`` valued
    ``{"logprob": ...}`` (vLLM's prompt log-probs). A bare number valued by a float is *text*: llama.cpp
    and hosted APIs key ``top_logprobs`` by the token's text, and the token printed "7" is not id 7. Text
    keys are matched through ``tokenizer`` (:func:`token_text`), never for a token no text names.
    """
    if not entries:
        return None
    key = f"token_id:{token_id}"
    if key in entries:
        return _logprob_value(entries[key])
    value = entries.get(str(token_id))
    if isinstance(value, dict) and "logprob" in value:
        return float(value["logprob"])
    if tokenizer is not None:
        text = token_text(tokenizer, token_id)
        if text is not None and text in entries:
            return _logprob_value(entries[text])
    return None


def _choices(answer: Any, n: int) -> list[dict]:
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise ServiceError("the server's completions answer has no choices")
    choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise ServiceError(f"the server answered {len(choices)} choices for {n} prompts")
    return choices


def _first_top(choice: dict) -> dict | None:
    lp = choice.get("logprobs") or {}
    top = lp.get("top_logprobs") or []
    return top[0] if top else None


def _last_prompt_entry(choice: dict) -> dict | None:
    entries = choice.get("prompt_logprobs") or []
    return entries[-1] if entries else None


class OpenAICompatLM(TokenizerMixin, BlackBoxLM):
    """A causal LM behind an OpenAI-compatible ``/v1/completions`` server (see the module docstring).

    :param url: the server's base URL, e.g. ``http://gpu-box:8000`` (the client adds ``/v1/...``)
    :param api_key: sent as a Bearer token if given (default ``$PROMPTGYM_API_KEY``; vLLM needs one
        only when started with ``--api-key``)
    :param model: the served model's name (default: the first of ``GET /v1/models``)
    :param tokenizer: a tokenizer object, local folder or Hugging Face id (default: our server's
        published tokenizer, else ``embeddings``' folder, else the served model's name as an id)
    :param embeddings: the input-embedding matrix, or where to read it (path, Hugging Face id or
        preset name); needed for soft prompts and word embeddings only
    :param method: "auto" (probe once) or one of :data:`METHODS` to force it
    :param top_k: how many log-probs to ask for with the "top_k" method
    :param max_length: longest row (default: the server's ``max_model_len`` capped at 1024, as in process)
    :param max_prompts: most prompts in one POST (an answer the server finds too large is split)
    """

    def __init__(self, url: str, api_key: str | None = None, *, model: str | None = None, tokenizer: Any = None,
                 embeddings: Any = None, method: str = "auto", top_k: int = 20, max_length: int | None = None,
                 max_prompts: int = 64, timeout: float = 600.0, retry: RetryPolicy | None = None) -> None:
        if method != "auto" and method not in METHODS:
            raise ConfigError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
        for field, value in (("top_k", top_k), ("max_prompts", max_prompts), ("max_length", max_length)):
            if value is None and field == "max_length":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a whole number >= 1, got {value!r}")
        self.url = url
        self.transport = Transport(url, resolve_api_key(api_key, required=False), timeout=timeout, retry=retry)
        self.top_k, self.max_prompts = top_k, max_prompts
        served = self._served_models()
        if model is None and served:
            model = str(served[0].get("id"))
        self.served_model = model
        info = self._promptgym_info()
        if info is not None and info.is_masked:
            raise ConfigError(masked_message(info.name))
        self.name = model or (info.name if info else url)
        self.use_tokenizer(self._load_tokenizer(tokenizer, embeddings, info))
        self._embeddings = None if embeddings is None else load_input_embeddings(embeddings)
        if self._embeddings is not None:
            self.vocab_size, self.embedding_dim = (int(s) for s in self._embeddings.shape)
        elif info is not None:
            self.vocab_size, self.embedding_dim = info.vocab_size, info.embedding_dim
        else:
            self.vocab_size, self.embedding_dim = len(self.tokenizer), 0  # 0: unknown until embeddings are given
        self.is_masked = False
        self.mask_token = None
        server_len = next((m.get("max_model_len") for m in served if str(m.get("id")) == model), None)
        limit = min(int(server_len), DEFAULT_MAX_LENGTH) if isinstance(server_len, int) else DEFAULT_MAX_LENGTH
        self.layout = RowLayout.for_tokenizer(self.tokenizer, max_length=max_length or limit,
                                              vocab_size=self.vocab_size, embedding_dim=self.embedding_dim,
                                              is_masked=False)
        self.batch_calls = 0
        self.prompts_sent = 0  # completions prompts sent for scoring (what a per-prompt server charges)
        self._stats: tuple[float, float] | None = None
        #: how rows travel, ``"ids"`` or ``"text"``, and whether several go in one POST: probed on the first
        #: request (:meth:`_probe_prompt_form`), None until then
        self.prompt_form: str | None = None
        self.batched: bool | None = None
        self._server_bos = False  # the server puts its own BOS before a text prompt: our rows' BOS is left to it
        self._texts: dict[int, str | None] = {}  # token_text() of label ids, as the server prints them
        #: how token-prompt rows are scored (:data:`METHODS`)
        self.method = self._probe() if method == "auto" else method
        #: how soft-prompt rows are scored: prompt log-probs need token ids, so method 2 falls back to the
        #: full vocabulary (probed when a soft prompt first comes, unless forced); None until then
        self.soft_method: str | None = self.method
        if self.method == "prompt_logprobs":
            self.soft_method = None if method == "auto" else "full_vocab"

    # ------------------------------------------------------------------ construction helpers
    def _served_models(self) -> list[dict]:
        try:
            answer = self.transport.get("/v1/models")
        except InvalidRequestError:  # not every compatible server lists its models
            return []
        data = answer.get("data") if isinstance(answer, dict) else None
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def _promptgym_info(self):
        """Our server's model description, or None for another server (no ``/v1/model``)."""
        from pydantic import ValidationError

        from promptgym.lm.wire import ModelInfo

        try:
            return ModelInfo.model_validate(self.transport.get("/v1/model"))
        except (InvalidRequestError, ValidationError):
            return None

    def _load_tokenizer(self, tokenizer: Any, embeddings: Any, info) -> Any:
        from transformers import AutoTokenizer

        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            return tokenizer
        if tokenizer is None and info is not None:
            from promptgym.lm.remote import load_served_tokenizer

            return load_served_tokenizer(self.transport, info.weights_sha256)
        source = tokenizer
        if source is None and isinstance(embeddings, (str, os.PathLike)):
            source = embeddings
        if source is None:
            source = self.served_model
        if source is None:
            raise ConfigError("name the model's tokenizer: tokenizer='path or Hugging Face id'")
        from promptgym.lm.presets import GGUF_PRESETS, preset_tokenizer, smollm2_tokenizer

        if str(source) in GGUF_PRESETS:
            return preset_tokenizer(str(source))
        if str(source) == "tiny-random-causal":
            return smollm2_tokenizer()
        try:
            return AutoTokenizer.from_pretrained(str(source))
        except Exception as exc:
            raise ConfigError(f"cannot load a tokenizer from {str(source)!r} ({type(exc).__name__}); "
                              "pass tokenizer='path or Hugging Face id'") from None

    def _probe_row(self) -> tuple[list[int], list[int]]:
        ids = list(self.layout.prefix) + list(self.encode("The movie was"))
        labels = [self.encode(" great")[0], self.encode(" terrible")[0]]
        if labels[0] == labels[1]:
            labels = [0, 1]
        return ids, labels

    def _probe(self) -> str:
        """The best method the server answers exactly (one small request per method tried)."""
        if self.prompt_form is None:  # first, and outside _supports: a server taking no prompt form is an error
            self._probe_prompt_form()
        ids, labels = self._probe_row()
        for method in METHODS[:-1]:
            if self._supports(method, [ids], labels):
                return method
        return "top_k"

    def _probe_prompt_form(self) -> None:
        """Find how this server takes prompts (:data:`PROMPT_FORMS`, best first; one small request each) and
        keep it on the instance. Engines differ: vLLM takes lists of token-id lists; llama.cpp's server
        refuses token ids with a 500 quoting a pydantic validation error, and a list of two strings with a
        500 from a failed assertion, so it gets one string per POST."""
        ids, _ = self._probe_row()
        refusals: list[str] = []
        for form, batched in PROMPT_FORMS:
            if batched and self.max_prompts < 2:
                continue
            n = 2 if batched else 1
            try:
                answer = self.transport.post("/v1/completions", self._body(self._payload(form, batched, [ids] * n),
                                                                           {}))
                _choices(answer, n)
            except (ConfigError, BudgetExhausted):  # a refused key, a spent quota, a row text cannot carry
                raise
            except (InvalidRequestError, ServiceError) as exc:
                refusals.append(f"{form}{', batched' if batched else ''}: {exc}")
                continue
            self.prompt_form, self.batched = form, batched
            if form == "text":
                self._check_text_tokens(answer, ids, n)
            return
        raise ServiceError(f"{self.url} took no prompt form (token ids or text, batched or one per request); "
                           f"it answered {clip(' | '.join(refusals), 400)}")

    def _check_text_tokens(self, answer: Any, ids: list[int], n: int) -> None:
        """Check that the server read the probe's text as our row: as many prompt tokens (``usage``) as the
        row has. One more means the server put its own BOS first: fine if our row starts with that BOS
        (then left to the server, and checked again), else its rows would not be ours (refused)."""
        usage = answer.get("usage") if isinstance(answer, dict) else None
        counted = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if not isinstance(counted, int) or isinstance(counted, bool):
            return  # nothing to compare: the local round trip of every row is the check
        per_prompt = counted / n
        if per_prompt == len(ids):
            return
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if per_prompt == len(ids) + 1:
            if ids and bos is not None and ids[0] == bos and not self._server_bos:
                self._server_bos = True
                answer = self.transport.post("/v1/completions", self._body(self._payload("text", False, [ids]), {}))
                return self._check_text_tokens(answer, ids, 1)
            raise ConfigError(
                f"{self.url} takes prompts as text only and puts a token of its own (its BOS) before each one, "
                "which the rows scored in process do not have: its scores would be of other rows. Use a server "
                "that takes token ids (vLLM, `promptgym serve`), or serve a model file that adds no BOS "
                "(llama.cpp: GGUF metadata tokenizer.ggml.add_bos_token = false)")
        raise ConfigError(f"{self.url} takes prompts as text only and reads the probe's text as {per_prompt:g} tokens "
                          f"where our tokenizer has {len(ids)}: is tokenizer= the served model's tokenizer?")

    def _payload(self, form: str | None, batched: bool | None, rows: list) -> Any:
        """``prompt`` of a POST: token-id lists or their texts, a list of them or (one per POST) the one."""
        items = [self._text_of(r) for r in rows] if form == "text" else [[int(t) for t in r] for r in rows]
        if batched is False:
            if len(items) != 1:
                raise InvalidRequestError(f"{len(items)} prompts for a server that takes one per request")
            return items[0]
        return items

    def _text_of(self, ids: Sequence[int]) -> str:
        """The text that stands for row ``ids``: what our tokenizer turns back into the same ids (special
        tokens written out, as llama.cpp's server parses them), else a ConfigError."""
        body = [int(t) for t in ids]
        if self._server_bos and body and body[0] == getattr(self.tokenizer, "bos_token_id", None):
            body = body[1:]
        text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        back = [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]
        if back != body:
            k = next((i for i, (a, b) in enumerate(zip(body, back)) if a != b), min(len(body), len(back)))
            got = f"{body[k] if k < len(body) else 'end'} -> {back[k] if k < len(back) else 'end'}"
            raise ConfigError(
                f"{self.url} takes prompts as text only (token ids were refused), and a row does not survive the "
                f"trip: its {len(body)} token ids decode to a text our tokenizer reads as {len(back)} other ids "
                f"(first difference at position {k}: {got}; text {clip(repr(text), 120)}), so the server would "
                "score another row than the one built. Use a server that takes token ids (vLLM, `promptgym "
                "serve`), or prompts whose tokens re-tokenise to themselves (e.g. whole words)")
        return text

    def _body(self, prompt: Any, fields: dict) -> dict[str, Any]:
        """A completions request: one greedy token (never ``max_tokens=0``: llama.cpp reads it as "until the
        context is full"), the ids-as-tokens flag vLLM honours and others ignore, then ``fields``."""
        body: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "return_tokens_as_token_ids": True, **fields}
        if self.served_model:
            body["model"] = self.served_model
        body["prompt"] = prompt
        return body

    def _supports(self, method: str, prompts: list, labels: list[int], soft: bool = False) -> bool:
        try:
            self._scores_of(method, prompts, labels, soft=soft)
        except (ConfigError, BudgetExhausted):  # a refused key or a spent quota is not an answer about methods
            raise
        except (InvalidRequestError, ServiceError, KeyError, TypeError, ValueError):
            return False
        return True

    # ------------------------------------------------------------------ what an API exposes
    @property
    def max_length(self) -> int:
        """The longest row this client sends (its layout's)."""
        return self.layout.max_length

    @property
    def approximate(self) -> bool:
        """True when scores are reconstructed from top-k log-probs (not exact; refused by ``submit``)."""
        return "top_k" in (self.method, self.soft_method)

    def embedding_matrix(self) -> np.ndarray:
        if self._embeddings is None:
            raise ConfigError("soft prompts and word embeddings over an OpenAI-compatible server need the model's "
                              "input embeddings: pass embeddings='model folder or Hugging Face id'")
        return self._embeddings

    def embedding_stats(self) -> tuple[float, float]:
        if self._stats is None:
            import torch

            w = torch.from_numpy(self.embedding_matrix())
            self._stats = (float(w.mean()), float(w.std()))
        return self._stats

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        idx = check_token_ids(tuple(int(i) for i in ids), self.vocab_size)
        return self.embedding_matrix()[list(idx)].copy()

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if not requests:
            raise InvalidRequestError("score() needs at least one request")
        if any(isinstance(r.prompt, SoftPrompt) for r in requests):
            self.embedding_matrix()  # a clear error before anything is sent
        rows, owners, label_ids = self.layout.build(requests, self.encode)
        if self.soft_method is None and any(isinstance(r.prompt, SoftPrompt) for r in requests):
            self.soft_method = self._probe_soft()
        # the rows of all requests with the same prompt kind and label ids go out together (few, full POSTs)
        groups: dict[tuple[bool, tuple[int, ...]], list[int]] = {}
        for r, req in enumerate(requests):
            groups.setdefault((isinstance(req.prompt, SoftPrompt), tuple(label_ids[r])), []).append(r)
        scores: list[np.ndarray] = [np.empty(0)] * len(requests)
        for (soft, labels), members in groups.items():
            mine = [rows[i] for r in members for i in owners[r]]
            prompts = [self._row_embeds(row) if soft else list(row.ids) for row in mine]
            lp = self._scores_of(self.soft_method if soft else self.method, prompts, list(labels), soft=soft)
            start = 0
            for r in members:
                scores[r] = lp[start:start + len(owners[r])]
                start += len(owners[r])
        results = []
        for r, req in enumerate(requests):
            soft = isinstance(req.prompt, SoftPrompt)
            result = label_result(scores[r], req.label_only, sum(len(rows[i].ids) for i in owners[r]))
            if (self.soft_method if soft else self.method) == "top_k":
                result.extra["approximate"] = True
            results.append(result)
        self.batch_calls += 1
        return results

    # ------------------------------------------------------------------ scoring
    def _probe_soft(self) -> str:
        if self.prompt_form is None:
            self._probe_prompt_form()
        ids, labels = self._probe_row()
        emb = self.embedding_matrix()[ids]
        for method in ("full_vocab", "logit_bias"):
            if self._supports(method, [emb], labels, soft=True):
                return method
        return "top_k"

    def _row_embeds(self, row: Row) -> np.ndarray:
        """A soft row as input embeddings: the words' embeddings, the prompt's vectors in place."""
        emb = self.embedding_matrix()[list(row.ids)]
        emb[row.soft_start:row.soft_start + len(row.soft)] = row.soft
        return emb

    def _scores_of(self, method: str, prompts: list, labels: list[int], soft: bool) -> np.ndarray:
        """Label log-probs ``(len(prompts), len(labels))`` at each prompt's next token, by ``method``."""
        if method == "prompt_logprobs":
            if soft:
                raise InvalidRequestError("prompt log-probs need token ids; soft rows use another method")
            expanded = [p + [c] for p in prompts for c in labels]
            choices = self._complete(expanded, {"echo": True, "prompt_logprobs": 1})
            out = np.empty(len(expanded), dtype=np.float32)
            for i, (choice, prompt) in enumerate(zip(choices, expanded, strict=True)):
                value = token_logprob(_last_prompt_entry(choice), prompt[-1])
                if value is None:
                    raise ServiceError("the server's prompt log-probs miss the appended label token")
                out[i] = value
            return out.reshape(len(prompts), len(labels))
        if method == "logit_bias":
            return self._forced_scores(prompts, labels, soft)
        fields: dict[str, Any] = {"logprobs": {"token_ids": 0, "full_vocab": -1, "top_k": self.top_k}[method]}
        if method == "token_ids":
            fields["logprob_token_ids"] = list(labels)
        choices = self._complete(prompts, fields, soft=soft)
        out = np.empty((len(prompts), len(labels)), dtype=np.float32)
        for i, choice in enumerate(choices):
            top = _first_top(choice)
            if method == "top_k":
                if top is None:  # llama.cpp returns no log-probs when the greedy token ends the text
                    raise ServiceError("the server's answer has no top log-probs for a row")
                out[i] = self._approximate(top, labels)
                continue
            if method == "full_vocab" and (top is None or len(top) < min(self.vocab_size, len(self.tokenizer))):
                raise ServiceError("the server did not return the full-vocabulary log-probs asked for")
            for j, c in enumerate(labels):
                value = token_logprob(top, c)
                if value is None:
                    raise ServiceError(f"the server's log-probs miss label token {c}")
                out[i, j] = value
        return out

    def _forced_scores(self, prompts: list, labels: list[int], soft: bool) -> np.ndarray:
        """Label log-probs by the "logit_bias" method: per label, every row with that label forced as the
        greedy token, its log-prob read from ``token_logprobs`` (the raw distribution's, not the biased one).
        One POST per label for a batching server; one per row and label, a row's labels in a row, for a server
        taking one prompt per POST (llama.cpp's then answers the second label from the row it just evaluated)."""
        out = np.empty((len(prompts), len(labels)), dtype=np.float32)
        fields = [{"logprobs": 0, "logit_bias": {str(int(c)): FORCE_BIAS}} for c in labels]
        if self.batched is False and not soft:
            for i, prompt in enumerate(prompts):
                for j, c in enumerate(labels):
                    out[i, j] = self._forced_logprob(self._complete([prompt], fields[j])[0], int(c))
        else:
            for j, c in enumerate(labels):
                for i, choice in enumerate(self._complete(prompts, fields[j], soft=soft)):
                    out[i, j] = self._forced_logprob(choice, int(c))
        if len(labels) > 1 and np.any(np.exp(out.astype(np.float64)).sum(axis=1) > 1.0 + 1e-3):
            raise ServiceError("the server's log-probs include the logit bias (the labels' probabilities sum to "
                               "more than 1): the \"logit_bias\" method cannot read it")
        return out

    def _forced_logprob(self, choice: dict, label: int) -> float:
        lp = choice.get("logprobs") or {}
        tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
        if not tokens or not values or values[0] is None:
            raise ServiceError("the server's answer has no log-prob of the generated token")
        if label not in self._texts:
            self._texts[label] = token_text(self.tokenizer, label)
        if tokens[0] != f"token_id:{label}" and (self._texts[label] is None or tokens[0] != self._texts[label]):
            raise ServiceError(f"the server generated {clip(repr(tokens[0]), 40)}, not label token {label} that "
                               "its logit bias forces")
        return float(values[0])

    def _approximate(self, top: dict | None, labels: list[int]) -> np.ndarray:
        """Label log-probs from a top-k answer: a label outside the top-k gets the leftover mass spread
        evenly over the tokens not listed (never more than the smallest listed log-prob)."""
        values = {c: token_logprob(top, c, self.tokenizer) for c in labels}
        listed = [float(v["logprob"] if isinstance(v, dict) else v) for v in (top or {}).values()]
        rest_mass = max(1.0 - sum(math.exp(v) for v in listed), 1e-12)
        floor = math.log(rest_mass) - math.log(max(self.vocab_size - len(listed), 1))
        if listed:
            floor = min(floor, min(listed))
        return np.asarray([floor if values[c] is None else values[c] for c in labels], dtype=np.float32)

    def _complete(self, prompts: list, fields: dict, soft: bool = False) -> list[dict]:
        """The choices of ``prompts`` (token-id lists, or embeddings with ``soft``), in POSTs of
        ``max_prompts`` (one, for a server that takes one per POST), in the probed prompt form; a POST the
        server finds too large is split in halves (nothing was charged)."""
        if self.prompt_form is None:
            self._probe_prompt_form()
        if soft and self.prompt_form == "text":  # llama.cpp ignores prompt_embeds and would score an empty prompt
            raise ConfigError(f"{self.url} takes prompts as text only: soft prompts need a server that takes "
                              "prompt_embeds (vLLM started with --enable-prompt-embeds)")
        out: list[dict] = []
        step = self.max_prompts if self.batched is not False else 1
        start = 0
        while start < len(prompts):
            part = prompts[start:start + step]
            if soft:
                body = self._body(None, fields)
                del body["prompt"]
                body["prompt_embeds"] = [encode_prompt_embeds(p) for p in part]
            else:
                body = self._body(self._payload(self.prompt_form, self.batched, part), fields)
            try:
                answer = self.transport.post("/v1/completions", body)
            except RequestTooLargeError:
                if step == 1:
                    raise
                step = max(1, step // 2)
                self.max_prompts = step
                continue
            out.extend(_choices(answer, len(part)))
            self.prompts_sent += len(part)
            start += len(part)
        return out

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return (f"OpenAICompatLM({self.url!r}, model={self.name!r}, method={self.method!r}, "
                f"prompt_form={self.prompt_form!r}, batched={self.batched!r})")
