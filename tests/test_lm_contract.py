"""The black-box contract and the package boundary: ``BlackBoxLM``'s defaults, the one check where a model
object comes in, the shared tokenizer mixin, the registry of URL schemes, and that ``promptgym.lm`` never
imports ``promptgym.serve`` (a client needs neither FastAPI nor the key store)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the envs)
from promptgym.errors import ConfigError, IncompatibleAgentError
from promptgym.lm import schemes
from promptgym.lm.base import MEMBERS, BlackBoxLM, ScoreResult, as_black_box
from promptgym.lm.local import LocalLM
from promptgym.lm.openai_compat import OpenAICompatLM
from promptgym.lm.remote import RemoteLM
from promptgym.lm.tokenizer import TokenizerMixin

LM_DIR = Path(__file__).resolve().parents[1] / "promptgym" / "lm"


class MinimalLM(BlackBoxLM):
    """A user backend that implements only what the contract requires."""

    name = "minimal"
    tokenizer = None
    vocab_size, embedding_dim, is_masked = 10, 4, False

    def __init__(self) -> None:
        self.batch_calls = 0

    def score(self, requests):
        self.batch_calls += 1
        return [ScoreResult(predictions=np.zeros(len(r.segments), dtype=np.int64)) for r in requests]

    def embedding_stats(self):
        return 0.0, 1.0

    def embed_tokens(self, ids):
        return np.zeros((len(ids), self.embedding_dim), dtype=np.float32)

    def encode(self, text):
        return tuple(range(1, len(text.split()) + 1))

    def label_token_ids(self, words):
        return list(range(len(words)))


# ---------------------------------------------------------------------------------------------- layering
def test_lm_never_imports_serve() -> None:
    """Statically (no import of promptgym.serve in any lm module) and at run time (importing every lm
    module, the clients included, loads neither promptgym.serve nor FastAPI)."""
    for path in LM_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "promptgym.serve" or n.startswith("promptgym.serve.") for n in names), path.name
    modules = sorted(f"promptgym.lm.{p.stem}" for p in LM_DIR.glob("*.py") if p.stem != "__init__")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m.startswith('promptgym.serve') or m == 'fastapi']\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_server_config_loads_without_fastapi() -> None:
    """The command line reads the server's defaults without importing the server or pydantic."""
    code = ("import sys\nfrom promptgym.serve.config import ServerConfig, server_defaults\n"
            "from promptgym.lm.transport import DEFAULT_MAX_ROWS\n"
            "assert server_defaults()['max_rows'] == DEFAULT_MAX_ROWS\n"
            "bad = [m for m in ('fastapi', 'pydantic', 'torch', 'promptgym.serve.app') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# ---------------------------------------------------------------------------------------------- the base class
def test_a_minimal_backend_gets_the_optional_capabilities_by_default() -> None:
    lm = MinimalLM()
    assert (lm.weights_sha256, lm.mask_token, lm.dtype, lm.max_length) == ("", None, "unknown", 1024)
    assert lm.approximate is False and lm.interrupt is None and lm.remaining_calls() is None
    assert lm.supports_white_box is False
    with pytest.raises(IncompatibleAgentError, match="MinimalLM is a black box"):
        lm.white_box()
    assert lm.decode([3, 4]) == "token ids [3, 4]"  # no tokenizer to decode with


def test_decode_defaults_to_the_tokenizer(tiny_causal) -> None:
    lm = MinimalLM()
    lm.tokenizer = tiny_causal.tokenizer
    ids = tiny_causal.encode(" a fine film")
    assert lm.decode(ids) == tiny_causal.decode(ids) == " a fine film"


def test_abstract_methods_are_required() -> None:
    class NoScore(BlackBoxLM):
        def embedding_stats(self):
            return 0.0, 1.0

    with pytest.raises(TypeError, match="score"):
        NoScore()


def test_every_backend_is_a_black_box_with_white_box_only_in_process(tiny_causal) -> None:
    for cls in (LocalLM, RemoteLM, OpenAICompatLM):
        assert issubclass(cls, BlackBoxLM) and issubclass(cls, TokenizerMixin)
        for method in ("encode", "decode", "label_token_ids"):  # one copy of the tokenizer code
            assert getattr(cls, method) is getattr(TokenizerMixin, method), (cls.__name__, method)
    assert tiny_causal.supports_white_box and not RemoteLM.supports_white_box
    assert tiny_causal.label_token_ids(["great", "terrible"]) == [tiny_causal.encode(" great")[0],
                                                                   tiny_causal.encode(" terrible")[0]]


def test_as_black_box_takes_backends_and_full_wrappers_and_names_what_is_missing(tiny_causal) -> None:
    lm = MinimalLM()
    assert as_black_box(lm) is lm

    class Wrapper:  # delegates every attribute: has every member, optional ones included
        def __init__(self, inner) -> None:
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

    wrapped = Wrapper(tiny_causal)
    assert as_black_box(wrapped) is wrapped and set(MEMBERS) <= set(dir(tiny_causal))

    class DuckLM:  # the required members only, and no subclassing
        name, tokenizer, vocab_size, embedding_dim, is_masked, batch_calls = "duck", None, 10, 4, False, 0
        score = embedding_stats = embed_tokens = encode = label_token_ids = decode = MinimalLM.score

    with pytest.raises(ConfigError, match="DuckLM is not a promptgym.lm.BlackBoxLM: subclass it") as err:
        as_black_box(DuckLM())
    assert "weights_sha256" in str(err.value) and "\n" not in str(err.value)


def test_an_env_refuses_a_model_object_that_is_no_black_box(data_dir) -> None:
    class DuckLM:
        name = "duck"

    with pytest.raises(ConfigError, match="DuckLM is not a promptgym.lm.BlackBoxLM"):
        gym.make("PromptSST2-v0", model=DuckLM(), budget=5)


# ---------------------------------------------------------------------------------------------- URL schemes
@pytest.fixture
def registry(monkeypatch):
    """The scheme registry, restored after the test."""
    monkeypatch.setattr(schemes, "_SCHEMES", dict(schemes._SCHEMES))
    return schemes


def test_built_in_schemes() -> None:
    assert set(schemes.schemes()) == {"http", "https", "openai+http", "openai+https"}
    assert schemes.parse_served("http://127.0.0.1:8000/") == ("native", "http://127.0.0.1:8000", {})
    assert schemes.parse_served("openai+http://gpu:8000?top_k=3") == ("openai", "http://gpu:8000", {"top_k": 3})
    assert not schemes.is_served("smollm2-135m") and not schemes.is_served("ftp://host") and not schemes.is_served(3)
    with pytest.raises(ConfigError, match="schemes: http, https, openai\\+http, openai\\+https"):
        schemes.parse_served("ftp://host:8000")


def test_a_new_backend_registers_its_scheme_without_editing_the_package(registry) -> None:
    made = []

    def client(base, api_key, **options):
        made.append((base, api_key, options))
        return MinimalLM()

    def parse(url):
        host, _, depth = url.split("://", 1)[1].partition("?depth=")
        return f"https://{host}", {"depth": int(depth)}

    registry.register_scheme("mock+https", registry.ServedProtocol("mock", parse, client))
    assert registry.is_served("mock+https://api.example?depth=2")
    assert registry.parse_served("mock+https://api.example?depth=2") == ("mock", "https://api.example", {"depth": 2})
    from promptgym.lm import get_lm

    assert isinstance(get_lm("mock+https://api.example?depth=2", api_key="k"), MinimalLM)  # get_lm routes it too
    assert made == [("https://api.example", "k", {"depth": 2})]
    registry.register_scheme("mock+https", registry.ServedProtocol("mock", parse, client))  # the same again: fine
    with pytest.raises(ConfigError, match="taken by the 'native' protocol"):
        registry.register_scheme("http", registry.ServedProtocol("mine", parse, client))
    with pytest.raises(ConfigError, match="URL scheme is lower-case"):
        registry.register_scheme("Bad Scheme", registry.ServedProtocol("mine", parse, client))


def test_checking_a_url_imports_no_client() -> None:
    code = ("import sys\nfrom promptgym.lm import parse_served\nparse_served('http://127.0.0.1:8000')\n"
            "assert 'promptgym.lm.remote' not in sys.modules and 'pydantic' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
