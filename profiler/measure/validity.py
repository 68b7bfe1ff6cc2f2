"""Whether a configuration's repeated samples can carry a claim: too noisy or too few, they cannot.

Like hyperfine's warning about outliers: a figure whose samples spread more than `max_cv`
(coefficient of variation, stdev / mean) or that rests on fewer than `min_samples` repeats is
shown with a mark, and no recommendation, bottleneck or verdict rests on it alone. A figure
written before this check has no validity object: it counts as valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.storage import Record

MAX_CV = 0.10
MIN_SAMPLES = 2  # --quick times two passes per configuration (QUICK_TIMING.workload_repeats)


@dataclass(frozen=True)
class Validity(Record):
    """The verdict on one sample set, and the thresholds it was checked against."""

    valid: bool
    reason: str | None  # "too noisy: CV 14.2% > 10%" or "too few samples: 2 < 3"
    cv: float
    n: int
    max_cv: float
    min_samples: int
    half_width: float | None = None  # figures from rounds: their paired interval, judged instead

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as plain data (no half_width key for a plain sample check)."""
        data = super().to_dict()
        if self.half_width is None:
            data.pop("half_width")
        return data


def check(samples: list[float] | tuple[float, ...], max_cv: float = MAX_CV,
          min_samples: int = MIN_SAMPLES) -> Validity:
    """Judge repeated samples of one quantity: too few first, then too noisy."""
    values = np.asarray(samples, dtype=float)
    mean = float(values.mean()) if values.size else 0.0
    cv = float(values.std(ddof=1)) / abs(mean) if values.size > 1 and mean else 0.0
    reason = None
    if values.size < min_samples:
        reason = f"too few samples: {values.size} < {min_samples}"
    elif cv > max_cv:
        reason = f"too noisy: CV {100 * cv:.1f}% > {100 * max_cv:g}%"
    return Validity(reason is None, reason, cv, int(values.size), max_cv, min_samples)


def check_paired(base: list[float], new: list[float], max_width: float = MAX_CV,
                 min_samples: int = MIN_SAMPLES) -> Validity:
    """Judge a figure measured in interleaved rounds by its paired interval against the reference.

    Per-round ratios spread by what a sub-second run costs on a busy machine; what a claim rests
    on is the interval of their mean, which narrows as rounds are added: too few rounds first,
    then an interval wider than ±`max_width`.
    """
    from profiler.measure.rounds import paired_ratio

    count = min(len(base), len(new))
    ratios = [n / b for b, n in zip(base[:count], new[:count], strict=True)]
    values = np.asarray(ratios, dtype=float)
    cv = float(values.std(ddof=1) / values.mean()) if values.size > 1 else 0.0
    width = paired_ratio(base, new).half_width if count >= 2 else float("inf")
    reason = None
    if count < min_samples:
        reason = f"too few rounds: {count} < {min_samples}"
    elif width > max_width:
        reason = (f"too noisy: 95% interval ±{100 * width:.1f}% > ±{100 * max_width:g}% after "
                  f"{count} rounds")
    return Validity(reason is None, reason, cv, count, max_width, min_samples,
                    width if width != float("inf") else None)


def unreliable(figure: Any) -> str | None:
    """Why a figure's samples (a point, remedy or experiment) cannot carry a claim.

    None when they can, or when the figure predates the check (no `validity`).
    """
    validity: Validity | None = getattr(figure, "validity", None)
    if validity is None or validity.valid:
        return None
    return validity.reason or "unreliable samples"


def reason_of(validity: dict[str, Any] | None) -> str | None:
    """The reason a stored validity object gives, or None when valid or absent."""
    if not validity or validity.get("valid", True):
        return None
    return str(validity.get("reason") or "unreliable samples")


def rechecked(validity: dict[str, Any] | None, samples: list[float]) -> dict[str, Any] | None:
    """Check `samples` again against the thresholds a stored validity was checked with."""
    if not validity:
        return None
    if validity.get("half_width") is not None:  # judged against its reference in its rounds
        return validity
    return check(samples, validity["max_cv"], validity["min_samples"]).to_dict()
