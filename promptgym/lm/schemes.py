"""URL schemes of served models: a registry, so that a new kind of server is one entry, not edits to if-chains.

A model named by a URL (``model="http://host:8000"``) is served elsewhere; the URL's scheme picks the
:class:`ServedProtocol` that reaches it. A protocol's ``parse`` checks a URL without any network
call (a malformed URL or option is refused before anything connects) and its ``client`` builds the
black box; both may be ``"module:attr"`` strings, as Gymnasium's entry points are, so checking a URL
never imports a client. Built in:

* ``http://``, ``https://``: ``promptgym serve``, our native protocol (exact, quota-aware;
  :class:`~promptgym.lm.remote.RemoteLM`);
* ``openai+http://``, ``openai+https://``: an OpenAI-compatible completions server such as vLLM
  (:class:`~promptgym.lm.openai_compat.OpenAICompatLM`; the query sets its options, see
  :func:`~promptgym.lm.openai_compat.parse_url`).

The API key never goes in the URL (URLs are recorded in run folders): pass ``api_key=`` or set
``$PROMPTGYM_API_KEY``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptgym.errors import ConfigError
from promptgym.lm.base import BlackBoxLM

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclass(frozen=True)
class ServedProtocol:
    """How the models behind one kind of server are reached.

    :param name: what :func:`parse_served` reports (e.g. "native": a quota-aware ``promptgym serve``)
    :param parse: ``url -> (base_url, client options)``, without any network call; or its ``"module:attr"``
    :param client: ``client(base_url, api_key, **options)`` builds the black box; or its ``"module:attr"``
    """

    name: str
    parse: str | Callable[[str], tuple[str, dict]]
    client: str | Callable[..., BlackBoxLM]


_SCHEMES: dict[str, ServedProtocol] = {}


def register_scheme(scheme: str, protocol: ServedProtocol) -> None:
    """Route model URLs ``<scheme>://...`` to ``protocol``; registering a taken scheme again is an error."""
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ConfigError(f"a URL scheme is lower-case letters, digits, '+', '-' or '.', got {scheme!r}")
    if scheme in _SCHEMES and _SCHEMES[scheme] != protocol:
        raise ConfigError(f"URL scheme {scheme!r} is taken by the {_SCHEMES[scheme].name!r} protocol")
    _SCHEMES[scheme] = protocol


def schemes() -> tuple[str, ...]:
    """Every registered URL scheme."""
    return tuple(_SCHEMES)


def is_served(name: object) -> bool:
    """Whether ``name`` names a served model (a URL of a registered scheme) rather than one to load in process."""
    return isinstance(name, str) and "://" in name and name.split("://", 1)[0] in _SCHEMES


def served_protocol(url: str) -> ServedProtocol:
    """The protocol of a served model's URL; a ConfigError for anything else."""
    if not is_served(url):
        examples = " or ".join(f"{s}://host:8000" for s in ("http", "openai+http") if s in _SCHEMES)
        raise ConfigError(f"a served model is a URL such as {examples or 'scheme://host:8000'} (schemes: "
                          f"{', '.join(_SCHEMES)}), got {url!r}")
    return _SCHEMES[url.split("://", 1)[0]]


def parse_served(url: str) -> tuple[str, str, dict]:
    """``(protocol, base_url, options)`` of a served model's URL, checked without any network call."""
    protocol = served_protocol(url)
    base, options = _load(protocol.parse)(url)
    return protocol.name, base, options


def connect(url: str, api_key: str | None = None) -> BlackBoxLM:
    """The black box of a served model (see :func:`parse_served`), e.g. a ``RemoteLM`` or ``OpenAICompatLM``."""
    protocol = served_protocol(url)
    base, options = _load(protocol.parse)(url)
    return _load(protocol.client)(base, api_key, **options)


def _load(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _native_url(url: str) -> tuple[str, dict]:
    from promptgym.lm.transport import check_base_url

    return check_base_url(url), {}


_NATIVE = ServedProtocol("native", _native_url, "promptgym.lm.remote:RemoteLM")
_OPENAI = ServedProtocol("openai", "promptgym.lm.openai_compat:parse_url", "promptgym.lm.openai_compat:OpenAICompatLM")
for _scheme, _protocol in (("http", _NATIVE), ("https", _NATIVE), ("openai+http", _OPENAI), ("openai+https", _OPENAI)):
    register_scheme(_scheme, _protocol)

__all__ = ["ServedProtocol", "connect", "is_served", "parse_served", "register_scheme", "schemes", "served_protocol"]
