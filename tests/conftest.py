"""Shared fixtures.

Unit tests run on tiny random models (code paths only). Tests marked ``integration`` use the real
default model and the real data mirror; they are part of the normal run (`make test`), not skipped.
The data directory defaults to the mirror beside the repository when PROMPTGYM_DATA_DIR is unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest-xdist workers (make test runs two) share the cores: each computes on its share of them, or torch's and
# OpenBLAS's spinning thread pools oversubscribe the machine (2 workers x 2 threads on 2 cores made the suite
# slower than one process). Set before torch or numpy is imported; an explicit OMP_NUM_THREADS is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

_ROOT = Path(__file__).resolve().parents[1]
_MIRROR = _ROOT.parent / "shared" / "data"
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


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """A fresh promptgym cache for the module (clients' tokenizer files land in it); its models folder is
    the real one, so no preset is rebuilt."""
    from promptgym.lm.presets import cache_root

    root = tmp_path_factory.mktemp("pgcache")
    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(models, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTGYM_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny_server(fresh_cache):
    """``start(store, dtype="float32", **options)``: the tiny causal model (an instance of its own, nothing
    shared with the client side) behind a real server on 127.0.0.1 and a free port; returns its URL.
    Every server started is stopped after the module."""
    from contextlib import ExitStack

    from promptgym.lm.local import LocalLM
    from promptgym.lm.presets import load_model
    from promptgym.serve.running import serve_in_background

    with ExitStack() as servers:
        def start(store, dtype: str = "float32", **options):
            lm = LocalLM(load_model("tiny-random-causal", dtype))
            return servers.enter_context(serve_in_background(lm, store, **options))

        yield start


@pytest.fixture(scope="module")
def unit_tier():
    """A 30-call benchmark tier named "unit", so submission tests run the real evaluate path in seconds."""
    from promptgym.bench import schema

    schema.TIERS["unit"] = 30
    yield "unit"
    del schema.TIERS["unit"]


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script(name)``: the module ``benchmarks/<name>.py`` (a script folder, not a package),
    loaded once per session; registered in ``sys.modules`` so its dataclasses resolve their module."""
    import importlib.util
    import sys

    loaded: dict[str, object] = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, _ROOT / "benchmarks" / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(name, module)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load


class JournalKilled(BaseException):
    """Stands for a kill (SIGKILL) of a run: raised right after the call journal flushed a batch."""


@pytest.fixture
def kill_after_batches(monkeypatch):
    """``with kill_after_batches(n): run(...)``: the run is killed (:class:`JournalKilled`, expected by the
    block) once ``n`` live batches are on disk; the journal is whole again after the block, so the test
    can then resume the run from it."""
    from contextlib import contextmanager

    from promptgym.journal import CallJournal

    @contextmanager
    def armed(batches: int):
        real = CallJournal._append
        state = {"n": 0}

        def append(self, obj):
            real(self, obj)
            if "batch" in obj:
                state["n"] += 1
                if state["n"] >= batches:
                    raise JournalKilled()

        with monkeypatch.context() as m, pytest.raises(JournalKilled):
            m.setattr(CallJournal, "_append", append)
            yield

    return armed
