"""Shared fixtures.

Unit tests run on tiny random models (code paths only). Tests marked ``integration`` use the real
default model and the real data mirror; they are part of the normal run (`make test`), not skipped.
The data directory defaults to the mirror beside the repository when PROMPTGYM_DATA_DIR is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("PROMPTGYM_DATA_DIR") and _MIRROR.is_dir():
    os.environ["PROMPTGYM_DATA_DIR"] = str(_MIRROR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("PROMPTGYM_DATA_DIR")
    assert value and Path(value).is_dir(), "set PROMPTGYM_DATA_DIR to the benchmark mirror (e.g. ../shared/data)"
    return Path(value)


@pytest.fixture(scope="session")
def tiny_causal():
    from promptgym.lm import get_lm

    return get_lm("tiny-random-causal", "float32")


@pytest.fixture(scope="session")
def tiny_masked():
    from promptgym.lm import get_lm

    return get_lm("tiny-random-masked", "float32")


@pytest.fixture(scope="session")
def smollm2():
    """The real default model in bf16 (as envs use it)."""
    from promptgym.lm import get_lm

    return get_lm("smollm2-135m", "bfloat16")
