"""The frozen model behind a black box: request/response types, backends and presets."""

from __future__ import annotations

import threading

from promptgym.errors import ConfigError
from promptgym.lm.base import BlackBoxLM, Prompt, ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt
from promptgym.lm.presets import DEFAULT_MODEL, PRESETS, load_model

_LMS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


#: URL schemes of served models: our protocol, and OpenAI-compatible engines (vLLM)
NATIVE_SCHEMES = ("http", "https")
OPENAI_SCHEMES = ("openai+http", "openai+https")
#: what an ``openai+http://...`` URL's query may set (arguments of ``OpenAICompatLM``)
OPENAI_URL_OPTIONS = {"model": str, "tokenizer": str, "embeddings": str, "method": str, "top_k": int,
                      "max_length": int, "max_prompts": int}


def is_served(name: object) -> bool:
    """Whether ``name`` names a served model (a URL) rather than one to load in process."""
    return isinstance(name, str) and name.split("://", 1)[0] in NATIVE_SCHEMES + OPENAI_SCHEMES and "://" in name


def parse_served(url: str) -> tuple[str, str, dict]:
    """``(protocol, base_url, options)`` of a served model's URL, checked without any network call.

    * ``http://host:port`` (or https): ``promptgym serve``, our native protocol (exact, quota-aware);
    * ``openai+http://host:port?tokenizer=...&embeddings=...``: an OpenAI-compatible completions
      server such as vLLM; the query sets :data:`OPENAI_URL_OPTIONS` (``method``, ``top_k``, ...).

    The API key never goes in the URL (URLs are recorded in run folders): pass ``api_key=`` or set
    ``$PROMPTGYM_API_KEY``.
    """
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    from promptgym.lm.transport import check_base_url

    if not is_served(url):
        raise ConfigError(f"a served model is a URL such as http://127.0.0.1:8000 or openai+http://host:8000, "
                          f"got {url!r}")
    scheme, rest = url.split("://", 1)
    if scheme in NATIVE_SCHEMES:
        return "native", check_base_url(url), {}
    parts = urlsplit(f"{scheme.split('+', 1)[1]}://{rest}")
    options: dict = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        kind = OPENAI_URL_OPTIONS.get(key)
        if kind is None:
            hint = "; pass the key as api_key=... or $PROMPTGYM_API_KEY" if "key" in key.lower() else ""
            raise ConfigError(f"unknown option {key!r} in {url!r}; options: {', '.join(OPENAI_URL_OPTIONS)}{hint}")
        if kind is int:
            if not value.isdigit():
                raise ConfigError(f"option {key} in {url!r} must be a whole number, got {value!r}")
            value = int(value)
        options[key] = value
    from promptgym.lm.openai_compat import METHODS

    if options.get("method", "auto") not in ("auto", *METHODS):
        raise ConfigError(f"option method in {url!r} must be 'auto' or one of {METHODS}, got {options['method']!r}")
    base = check_base_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)))
    return "openai", base, options


def connect(url: str, api_key: str | None = None):
    """The black box of a served model (see :func:`parse_served`): a ``RemoteLM`` or ``OpenAICompatLM``."""
    protocol, base, options = parse_served(url)
    if protocol == "native":
        from promptgym.lm.remote import RemoteLM

        return RemoteLM(base, api_key)
    from promptgym.lm.openai_compat import OpenAICompatLM

    return OpenAICompatLM(base, api_key, **options)


def get_lm(name: str = DEFAULT_MODEL, dtype: str = "bfloat16", api_key: str | None = None):
    """The shared in-process LM for ``(name, dtype)``: every env of a process reuses one model.

    A URL (:func:`is_served`) connects to a served model instead (a new client each time; ``dtype`` is
    the server's business); ``api_key`` applies to served models only.
    """
    from promptgym.lm.local import LocalLM

    if is_served(name):
        return connect(name, api_key)
    if api_key is not None:
        raise ConfigError(f"api_key is for a served model (model='http://host:port'), not {name!r}")
    key = (name, dtype)
    with _LOCK:
        if key not in _LMS:
            _quiet_transformers()
            _LMS[key] = LocalLM(load_model(name, dtype))
        return _LMS[key]


def in_dtype(lm: BlackBoxLM, dtype: str | None) -> BlackBoxLM:
    """``lm``'s model in ``dtype`` ("float32"/"bfloat16"; None: ``lm`` itself).

    A shared in-process model is reloaded through the cache above (searches run in bf16, final
    figures are re-checked in fp32); any other backend is returned as it is: its precision is its
    server's business.
    """
    from promptgym.lm.local import LocalLM

    if dtype is None or not isinstance(lm, LocalLM):
        return lm
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be 'float32', 'bfloat16' or None, got {dtype!r}")
    import torch

    want = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return lm if lm.dtype == want else get_lm(lm.name, dtype)


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks must never break loading
        pass


__all__ = ["BlackBoxLM", "DEFAULT_MODEL", "PRESETS", "Prompt", "ScoreRequest", "ScoreResult", "SoftPrompt",
           "TokenPrompt", "connect", "get_lm", "in_dtype", "is_served", "load_model", "parse_served"]
