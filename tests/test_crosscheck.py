"""The independent profile that Scalene's hotspots are held against, and the comparison."""

from __future__ import annotations

import math

from profiler.analysis.hotspots import cross_check
from profiler.measure.callprofile import profile_call


def _native_heavy() -> int:
    return len(sorted(range(400_000, 0, -1)))  # the time is in a built-in called from here


def _python_heavy() -> int:
    total = 0
    for i in range(200_000):
        total += i % 7
    return total


def _both() -> None:
    _native_heavy()
    _python_heavy()


def test_built_in_time_is_credited_to_its_python_caller() -> None:
    found = profile_call(_both, "a test workload")
    assert found["tool"] == "cProfile" and found["what"] == "a test workload"
    rows = {row["function"]: row for row in found["functions"]}
    assert rows["_native_heavy"]["path"].endswith("test_crosscheck.py")
    assert rows["_native_heavy"]["pct"] > 5 and rows["_python_heavy"]["pct"] > 5
    assert not any(name.startswith("<built-in") for name in rows)  # folded into their callers
    assert sum(row["pct"] for row in found["functions"]) <= 100 + 1e-6
    assert _both.__name__ in rows and rows["_both"]["pct"] < 1  # it only calls the other two


def _scalene_row(name: str, pct: float, line: int = 10, path: str = "/x/torch/nn/linear.py"
                 ) -> dict[str, object]:
    return {"file": "torch/nn/linear.py", "path": path, "line": line, "name": name,
            "function": name, "stage": "forward", "cpu_total_pct": pct}


def test_cross_check_marks_the_functions_the_two_profiles_disagree_on() -> None:
    reference = {"tool": "cProfile", "what": "one bulk encode", "functions": [
        {"path": "/x/torch/nn/linear.py", "line": 12, "function": "forward", "pct": 80.0},
        {"path": "/x/torch/nn/linear.py", "line": 90, "function": "forward", "pct": 1.0},
        {"path": "/x/torch/nn/parameter.py", "line": 21, "function": "__instancecheck__",
         "pct": 0.3}]}
    rows = [_scalene_row("Linear.forward", 50.1),
            _scalene_row("_ParameterMeta.__instancecheck__", 16.7, 21,
                         "/x/torch/nn/parameter.py"),
            _scalene_row("Other.forward", 1.5, 88),
            _scalene_row("gone", 2.0, 5, "/x/elsewhere.py")]
    check = cross_check(rows, reference)
    assert check is not None
    by_name = {row["name"]: row for row in check["rows"]}
    # the nearest `forward` of the same file is the one matched
    assert by_name["Linear.forward"]["reference_pct"] == 80.0
    assert by_name["Other.forward"]["reference_pct"] == 1.0
    assert by_name["Linear.forward"]["verdict"] == "Scalene credits less"
    assert by_name["_ParameterMeta.__instancecheck__"]["verdict"] == "Scalene credits more"
    assert by_name["Other.forward"]["agrees"] and by_name["gone"]["agrees"]  # small either way
    assert math.isclose(by_name["gone"]["reference_pct"], 0.0)
    assert (check["agree"], check["total"]) == (2, 4)


def test_no_reference_or_no_hotspots_means_no_check() -> None:
    assert cross_check([], {"tool": "cProfile", "what": "", "functions": []}) is None
    assert cross_check([_scalene_row("f", 1.0)], None) is None
