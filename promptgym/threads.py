"""The thread settings an agent's arithmetic runs under, recorded so a run can be repeated.

An agent is a deterministic function of its seed and of the answers it gets, *on one thread
setting*: the BLAS behind numpy splits a matrix product's sums over its threads, so the same
``X @ X.T`` differs in the last bits between 1 and 2 threads, and pycma's eigendecomposition (BBT,
CMA-ELBO, the snapshot ensemble) drifts into other samples within a few generations; torch's own
threads do the same to the flows and policies of SNPE and SB3. Measured on a 2-core host: a BBT
journal written with 2 BLAS threads and resumed with ``OMP_NUM_THREADS=1`` diverged at its 8th batch.

So a run records the settings it searched under (:func:`current_threads`) and a resume applies the
recorded ones for the search (:func:`pinned_threads`), then restores the process's own. The LM's
answers are not affected by this: replayed ones come from the journal, new ones may be computed on
any thread count.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from promptgym.errors import ConfigError

#: the settings a run records: torch's intra-op threads and the BLAS threads numpy calls into
KEYS = ("torch", "blas")


def _blas_threads() -> int | None:
    """Threads of the BLAS library numpy uses (None: threadpoolctl sees none)."""
    from threadpoolctl import threadpool_info

    counts = [int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts) if counts else None


def current_threads() -> dict[str, int | None]:
    """The process's thread settings now: ``{"torch": n, "blas": m}``."""
    import torch

    return {"torch": int(torch.get_num_threads()), "blas": _blas_threads()}


def check_threads(settings: Any) -> dict[str, int | None]:
    """``settings`` as a thread-settings dict, or a one-line ConfigError saying what is wrong."""
    if not isinstance(settings, Mapping) or set(settings) - set(KEYS):
        raise ConfigError(f"thread settings must be a mapping with keys among {KEYS}, not {settings!r}")
    out: dict[str, int | None] = {}
    for key in KEYS:
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"thread setting {key!r} must be a positive integer or None, not {value!r}")
        out[key] = value
    return out


def planned_threads(settings: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """The settings :func:`pinned_threads` (``settings``) will put in force, known before entering it (what
    a new journal records)."""
    wanted = check_threads(settings or {})
    return {**current_threads(), **{k: v for k, v in wanted.items() if v is not None}}


@contextmanager
def pinned_threads(settings: Mapping[str, int | None] | None) -> Iterator[dict[str, int | None]]:
    """Run the block under ``settings`` (None or a missing key: leave that one as it is); restore after.

    Yields the settings in force inside the block, which is what a run records.
    """
    import torch

    wanted = check_threads(settings or {})
    before = int(torch.get_num_threads())
    with ExitStack() as stack:
        if wanted["blas"] is not None:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=wanted["blas"], user_api="blas"))
        if wanted["torch"] is not None:
            torch.set_num_threads(wanted["torch"])
            stack.callback(torch.set_num_threads, before)
        yield current_threads()
