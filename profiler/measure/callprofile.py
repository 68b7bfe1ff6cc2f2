"""An independent profile of a plain encode, to hold Scalene's hotspots against.

Scalene samples on a timer signal and credits native time (torch's kernels) to whichever
Python line is current when the signal lands, which can favour the wrong line. cProfile counts
every call exactly: here each Python function's share is its own time plus that of the native
(built-in) functions it calls directly, the same split Scalene's function rows make.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

TOP_FUNCTIONS = 300  # enough to find every function of a hotspot table


def profile_call(fn: Callable[[], object], what: str) -> dict[str, Any]:
    """Run `fn` under cProfile; return each Python function's share of the time, largest first."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    stats: Any = pstats.Stats(profiler)
    total = float(stats.total_tt) or 1e-12
    own: dict[tuple[str, int, str], float] = {}
    for key, (_, _, self_s, _, callers) in stats.stats.items():
        if key[0] != "~":  # a Python function: its own time
            own[key] = own.get(key, 0.0) + self_s
            continue
        for caller, (_, _, from_caller_s, _) in callers.items():  # a built-in: to its caller
            if caller[0] != "~":
                own[caller] = own.get(caller, 0.0) + from_caller_s
    ranked = sorted(own.items(), key=lambda item: -item[1])[:TOP_FUNCTIONS]
    rows = [{"path": path, "line": line, "function": name, "pct": 100 * seconds / total}
            for (path, line, name), seconds in ranked]
    return {"tool": "cProfile", "what": what, "total_s": total, "functions": rows}
