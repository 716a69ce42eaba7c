"""Plain JSON values of numpy ones: what run folders, seed files and a Result's records are written as.

Low in the layers (generic machinery) so that :meth:`promptgym.agent.Result.to_record` and the run
folders (:mod:`promptgym.runs`) share one conversion rather than two that could drift apart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None when it is None or not finite (JSON has no NaN)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and non-finite floats as None (for JSON files)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)
