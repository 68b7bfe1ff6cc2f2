"""Statistics, the repeat loop, timers, the RSS sampler, and choosing batch sizes."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from profiler.config import Timing
from profiler.measure.memory import PeakRss, rss_mb
from profiler.measure.stats import Stats, summarize
from profiler.measure.timing import RepeatPlan, repeat, timed
from profiler.studies.batch_size import WorkloadPoint, pick_batch_sizes
from profiler.workloads import Padding

# --- summarize ------------------------------------------------------------------------------

SAMPLES = [12.0, 10.0, 11.0, 15.0, 10.5, 30.0, 9.0, 11.5, 10.0, 13.0]


def test_summarize_against_numpy() -> None:
    stats = summarize(SAMPLES)
    values = np.array(SAMPLES)
    assert stats.n == 10
    assert stats.median == pytest.approx(11.25)
    assert stats.mean == pytest.approx(13.2)
    assert stats.min == 9.0
    assert stats.max == 30.0
    stdev = statistics.stdev(SAMPLES)  # ddof=1
    assert stats.stdev == pytest.approx(stdev)
    assert stats.stdev == pytest.approx(float(values.std(ddof=1)))
    assert stats.cv == pytest.approx(stdev / 13.2)
    assert stats.p50 == pytest.approx(stats.median)
    # numpy's default (linear) percentiles, worked by hand: sorted values, rank = p/100 * (n-1)
    ordered = sorted(SAMPLES)  # 9 10 10 10.5 11 11.5 12 13 15 30
    assert stats.p95 == pytest.approx(ordered[8] + 0.55 * (ordered[9] - ordered[8]))  # 23.25
    assert stats.p99 == pytest.approx(ordered[8] + 0.91 * (ordered[9] - ordered[8]))  # 28.65
    assert stats.p95 == pytest.approx(23.25)
    assert stats.samples == SAMPLES  # raw samples kept, in order


def test_summarize_single_sample() -> None:
    stats = summarize([4.0])
    assert (stats.n, stats.median, stats.mean, stats.min, stats.max) == (1, 4.0, 4.0, 4.0, 4.0)
    assert stats.stdev == 0.0
    assert stats.cv == 0.0
    assert stats.p95 == stats.p99 == 4.0


def test_summarize_empty_raises() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_summarize_is_json_ready() -> None:
    data = summarize([1, 2, 3]).to_dict()
    assert set(data) == {f for f in Stats.__dataclass_fields__}
    assert all(type(v) in (int, float) for k, v in data.items() if k != "samples")
    assert all(type(v) is float for v in data["samples"])


def test_summarize_constant_samples_have_zero_cv() -> None:
    stats = summarize([2.5] * 6)
    assert stats.stdev == 0.0
    assert stats.cv == 0.0


# --- RepeatPlan and repeat ------------------------------------------------------------------


def test_repeat_plan_done() -> None:
    plan = RepeatPlan(warmup=1, min_time_s=1.0, min_repeats=3, max_repeats=10)
    assert not plan.done(0, 0.0)
    assert not plan.done(2, 5.0)  # enough time, too few repeats
    assert not plan.done(5, 0.5)  # enough repeats, too little time
    assert plan.done(3, 1.0)
    assert plan.done(10, 0.0)  # the cap wins
    assert plan.done(11, 0.0)


def test_repeat_plan_from_timing() -> None:
    timing = Timing(warmup_repeats=4, min_time_s=0.5, min_repeats=2, max_repeats=7)
    assert RepeatPlan.from_timing(timing) == RepeatPlan(4, 0.5, 2, 7)


class FakeWork:
    """Stands in for a workload: returns the seconds it is told to, and counts calls."""

    def __init__(self, *durations: float) -> None:
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        value = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        return value


def test_repeat_stops_once_time_and_count_are_met() -> None:
    work = FakeWork(0.25)
    seen: list[tuple[int, float]] = []
    samples = repeat(work, RepeatPlan(warmup=2, min_time_s=1.0, min_repeats=3, max_repeats=50),
                     lambda n, s: seen.append((n, s)))
    assert samples == [0.25] * 4
    assert work.calls == 2 + 4
    assert seen == [(1, 0.25), (2, 0.25), (3, 0.25), (4, 0.25)]


def test_repeat_minimum_count_when_each_call_is_slow() -> None:
    work = FakeWork(10.0)
    samples = repeat(work, RepeatPlan(warmup=1, min_time_s=1.0, min_repeats=3, max_repeats=50))
    assert samples == [10.0] * 3
    assert work.calls == 4


def test_repeat_is_capped() -> None:
    work = FakeWork(0.0)
    samples = repeat(work, RepeatPlan(warmup=0, min_time_s=1.0, min_repeats=1, max_repeats=7))
    assert len(samples) == 7
    assert work.calls == 7


def test_repeat_drops_warm_up_results() -> None:
    work = FakeWork(100.0, 100.0, 100.0, 1.0)
    samples = repeat(work, RepeatPlan(warmup=3, min_time_s=0.0, min_repeats=2, max_repeats=5))
    assert samples == [1.0, 1.0]
    assert work.calls == 5


# --- timers and memory ----------------------------------------------------------------------


def test_timed_sleep() -> None:
    calls = []

    def nap() -> None:
        calls.append(1)
        time.sleep(0.05)

    elapsed = timed(nap, "cpu")
    assert calls == [1]
    assert 0.05 <= elapsed < 5.0


def test_peak_rss_catches_a_temporary_allocation() -> None:
    size = 200 * 1024 * 1024
    with PeakRss(hz=200) as memory:
        block = bytearray(size)
        block[::4096] = b"\x01" * len(range(0, size, 4096))  # touch every page
        time.sleep(0.2)  # several sampling intervals
        del block
    assert memory.increase_mb > 100
    assert memory.peak_mb > rss_mb() + 100  # the peak saw the block, since given back


def test_peak_rss_without_allocation_is_small() -> None:
    with PeakRss() as memory:
        time.sleep(0.02)
    assert 0 <= memory.increase_mb < 50
    assert rss_mb() > 0


# --- pick_batch_sizes -----------------------------------------------------------------------


def point(batch_size: int, texts_per_s: float) -> WorkloadPoint:
    throughput = summarize([texts_per_s * 0.99, texts_per_s, texts_per_s * 1.01])
    return WorkloadPoint(workload="bulk", batch_size=batch_size, texts=256, calls_per_pass=1,
                         throughput_texts_per_s=throughput, call_latency_ms=summarize([1.0]),
                         latency_per_text_ms=1.0, tokens_per_s=1.0,
                         padding=Padding(100, 100, 1.0, 1.0, 1.0), cuda_memory_mb=None)


def test_pick_fastest_and_smallest_within_tolerance() -> None:
    points = [point(8, 100), point(16, 200), point(32, 300), point(64, 310), point(128, 305)]
    assert pick_batch_sizes(points, 0.05) == (64, 32)  # 300 >= 310 * 0.95 = 294.5


def test_pick_with_zero_tolerance_recommends_the_fastest() -> None:
    points = [point(8, 100), point(32, 300), point(64, 310), point(128, 305)]
    assert pick_batch_sizes(points, 0.0) == (64, 64)


def test_pick_excludes_just_outside_the_tolerance() -> None:
    points = [point(16, 94.9), point(32, 100.0)]
    assert pick_batch_sizes(points, 0.05) == (32, 32)


def test_pick_includes_exactly_at_the_tolerance() -> None:
    points = [point(16, 95.0), point(32, 100.0)]
    assert pick_batch_sizes(points, 0.05) == (32, 16)


def test_pick_ties_recommend_the_smallest() -> None:
    fastest, recommended = pick_batch_sizes([point(64, 300), point(32, 300), point(8, 10)], 0.0)
    assert fastest in (32, 64)
    assert recommended == 32


def test_pick_ignores_input_order() -> None:
    points = [point(256, 280), point(8, 100), point(64, 310), point(16, 299)]
    assert pick_batch_sizes(points, 0.05) == (64, 16)
    assert pick_batch_sizes(list(reversed(points)), 0.05) == (64, 16)


def test_pick_single_point() -> None:
    assert pick_batch_sizes([point(32, 50)], 0.05) == (32, 32)
