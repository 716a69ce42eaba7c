"""The frozen model behind a black box: request/response types, backends and presets."""

from __future__ import annotations

import threading

from promptgym.lm.base import BlackBoxLM, Prompt, ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt
from promptgym.lm.presets import DEFAULT_MODEL, PRESETS, load_model

_LMS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()


def get_lm(name: str = DEFAULT_MODEL, dtype: str = "bfloat16"):
    """The shared in-process LM for ``(name, dtype)``: every env of a process reuses one model."""
    from promptgym.lm.local import LocalLM

    key = (name, dtype)
    with _LOCK:
        if key not in _LMS:
            _quiet_transformers()
            _LMS[key] = LocalLM(load_model(name, dtype))
        return _LMS[key]


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks must never break loading
        pass


__all__ = ["BlackBoxLM", "DEFAULT_MODEL", "PRESETS", "Prompt", "ScoreRequest", "ScoreResult", "SoftPrompt",
           "TokenPrompt", "get_lm", "load_model"]
