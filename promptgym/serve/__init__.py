"""The service: a promptgym model behind HTTP, with API keys, per-key call quotas and signed usage receipts.

``promptgym serve`` and ``promptgym keys`` run it. The modules, one concept each:

* :mod:`~promptgym.serve.app`: the FastAPI app and its endpoints;
* :mod:`~promptgym.serve.limits`: what a request must pass before any model work (nothing refused is charged);
* :mod:`~promptgym.serve.worker`: the one thread that owns the model, and who pays when a job fails;
* :mod:`~promptgym.serve.completions`: the OpenAI-compatible ``/v1/completions`` subset;
* :mod:`~promptgym.serve.keys`: API keys, quotas and usage in SQLite;
* :mod:`~promptgym.serve.receipts`: the signing key and each key's chain of answered calls;
* :mod:`~promptgym.serve.config`: the server's limits (:class:`ServerConfig`);
* :mod:`~promptgym.serve.running`: the ``promptgym serve`` process and a server in a background thread.

Imports run one way: this package uses :mod:`promptgym.lm` (the backends, the wire protocol in
:mod:`promptgym.lm.wire`, the receipt hashes in :mod:`promptgym.lm.receipts`), which never imports it, so
a client needs neither FastAPI nor the key store. Names below are imported on first use, so that
reading :class:`ServerConfig` (the command line's defaults) does not import FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ServerConfig": "promptgym.serve.config", "KeyStore": "promptgym.serve.keys",
            "create_app": "promptgym.serve.app", "serve": "promptgym.serve.running",
            "serve_in_background": "promptgym.serve.running"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'promptgym.serve' has no attribute {name!r}")


__all__ = list(_EXPORTS)
