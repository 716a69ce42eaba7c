"""The kind of host a run's LM ran on: CPU model, bf16 instruction sets and torch build.

A bf16 matmul rounds by the CPU's kernels (an AMD EPYC with AVX512-BF16 and an Intel Xeon with AMX give
other last bits), and a CMA-ES search ranks candidates by rewards that close, so a replay on another CPU
kind branches into another, equally legitimate run. A run records its host (:func:`current_host`) so that
``promptgym audit`` knows, instead of being told, whether its replay must be exact (:func:`same_kind`).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: longest CPU model name a record keeps (the submission schema's limit)
MAX_CPU_NAME = 200
#: /proc/cpuinfo flag -> the name a record uses, for the instruction sets torch's bf16 kernels use
BF16_FLAGS = (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))
BF16_NAMES = tuple(name for _, name in BF16_FLAGS)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the platform module's name, without flags
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def current_host() -> dict[str, Any]:
    """This host as a run records it: ``{"cpu": model name, "bf16": [instruction sets], "torch": version}``."""
    model, flags = _cpuinfo()
    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "unknown"
    return {"cpu": model[:MAX_CPU_NAME], "bf16": [name for flag, name in BF16_FLAGS if flag in flags], "torch": torch}


def describe_host(host: Mapping[str, Any]) -> str:
    """One phrase: ``"AMD EPYC (AVX512-BF16), torch 2.13.0+cpu"``."""
    return f"{host['cpu']} ({', '.join(host['bf16']) or 'no bf16 instructions'}), torch {host['torch']}"


def same_kind(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two recorded hosts run bf16 alike: same CPU model, bf16 instruction sets and torch build."""
    return (a["cpu"] == b["cpu"] and sorted(a["bf16"]) == sorted(b["bf16"]) and a["torch"] == b["torch"])


__all__ = ["BF16_NAMES", "MAX_CPU_NAME", "current_host", "describe_host", "same_kind"]
