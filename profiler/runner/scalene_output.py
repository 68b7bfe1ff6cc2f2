"""Make Scalene write only the lines it has something to say about, as its reduced view does.

Scalene writes a record for every line of every file it sampled: a quick build's profile held
22,779 lines, 43 of them with a sample. Building, validating (pydantic, twice) and indenting the
others, and scanning each file for native imports (which only its AI prompts read), took most of
the 10-15 s each profiled process spent exiting. Lines without samples carry nothing the
hotspots, the downloads or Scalene's own viewer show beyond the source text; "sampled" is
the test the viewer's copy already used (`hotspots.is_active`).

Applied inside the worker, which runs in Scalene's own process; Scalene is pinned in
`pyproject.toml`, and a Scalene without these methods is left as it is (a slower exit).
"""

from __future__ import annotations

import functools
from typing import Any

from profiler.analysis.hotspots import is_active


def trim_scalene_output() -> bool:
    """Patch the running Scalene to skip lines without samples; whether it could."""
    try:
        from scalene.scalene_analysis import ScaleneAnalysis
        from scalene.scalene_json import ScaleneJSON
    except ImportError:
        return False
    line = getattr(ScaleneJSON, "output_profile_line", None)
    if line is None or getattr(line, "trimmed", False):
        return line is not None
    if not hasattr(ScaleneAnalysis, "get_native_imported_modules"):
        return False

    @functools.wraps(line)
    def active_lines(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        found: dict[str, Any] = line(self, *args, **kwargs)
        keep = not isinstance(found, dict) or kwargs.get("force_print") or is_active(found)
        return found if keep else {}

    active_lines.trimmed = True  # type: ignore[attr-defined]
    ScaleneJSON.output_profile_line = active_lines
    ScaleneAnalysis.get_native_imported_modules = staticmethod(lambda source: [])
    return True
