"""The frozen model behind a black box: request/response types, backends and presets, and the clients of
served models (:mod:`promptgym.lm.schemes` routes a model URL to one). The service itself is
:mod:`promptgym.serve`, which imports this package, never the reverse."""

from __future__ import annotations

import threading

from promptgym.errors import ConfigError
from promptgym.lm.base import BlackBoxLM, Prompt, ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt, as_black_box
from promptgym.lm.presets import DEFAULT_MODEL, PRESETS, load_model
from promptgym.lm.schemes import ServedProtocol, connect, is_served, parse_served, register_scheme

_LMS: dict[tuple[str, str], BlackBoxLM] = {}
_LOCK = threading.Lock()


def get_lm(name: str = DEFAULT_MODEL, dtype: str = "bfloat16", api_key: str | None = None) -> BlackBoxLM:
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


__all__ = ["BlackBoxLM", "DEFAULT_MODEL", "PRESETS", "Prompt", "ScoreRequest", "ScoreResult", "ServedProtocol",
           "SoftPrompt", "TokenPrompt", "as_black_box", "connect", "get_lm", "in_dtype", "is_served", "load_model",
           "parse_served", "register_scheme"]
