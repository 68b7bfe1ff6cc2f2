from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from profiler.config import Timing
from profiler.measure.rounds import (
    AA_SUFFIX,
    Outcome,
    Precision,
    Rates,
    aa_check,
    paired_ratio,
    precision_of,
    rate_width,
    ratio_widths,
    run_rounds,
)
from profiler.measure.stats import speedup
from profiler.workloads import Share, align, padded, round_share

REF, TWIN, NOOP, FAST = "ref", "ref" + AA_SUFFIX, "noop", "fast"
PLANTED = 1.10


class Machine:
    """A fake machine: every call costs fake seconds that grow with the calls made so far."""

    def __init__(self, drift: float = 0.0, noise: float = 0.0, seed: int = 0,
                 base_cost: float = 0.01, texts: int = 100) -> None:
        self.drift, self.noise, self.base_cost, self.texts = drift, noise, base_cost, texts
        self.rng = random.Random(seed)
        self.now = 0.0
        self.calls = 0
        self.log: list[tuple[str, int]] = []

    def clock(self) -> float:
        return self.now

    def contender(self, name: str, work: float) -> Callable[[int], float]:
        def run(round_: int) -> float:
            cost = self.base_cost * work * (1 + self.drift * self.calls)
            if self.noise:
                cost *= math.exp(self.rng.gauss(0.0, self.noise))
            self.now += cost
            self.calls += 1
            self.log.append((name, round_))
            return self.texts / cost

        return run


def _contenders(machine: Machine, works: dict[str, float]) -> dict[str, Callable[[int], float]]:
    return {name: machine.contender(name, work) for name, work in works.items()}


def _claims(pairs: list[tuple[str, str]]) -> Callable[[Rates], dict[str, float]]:
    return lambda rates: ratio_widths(rates, pairs)


WORKS = {REF: 1.0, TWIN: 1.0, NOOP: 1.0, FAST: 1 / PLANTED}
PAIRS = [(REF, TWIN), (REF, NOOP), (REF, FAST)]
UNREACHABLE = Precision(target=1e-12, budget_s=1e9, min_rounds=3, max_rounds=40)


# --- drift: interleaved, paired rounds cancel it; blocks do not -------------------------------


def test_interleaved_paired_rounds_cancel_linear_drift() -> None:
    covered = {NOOP: 0, FAST: 0, TWIN: 0}
    for seed in range(10):
        machine = Machine(drift=0.004, noise=0.005, seed=seed)
        rates, outcome = run_rounds(_contenders(machine, WORKS), UNREACHABLE, _claims(PAIRS),
                                    seed=seed, clock=machine.clock)
        assert outcome.stopped_by == "max_rounds" and outcome.rounds == 40
        assert machine.calls == 160  # the machine slowed by 64% over the run
        assert outcome.elapsed_s == pytest.approx(machine.now)

        noop = paired_ratio(rates[REF], rates[NOOP])
        assert noop.rounds == 40
        assert abs(noop.estimate - 1.0) < 0.01
        covered[NOOP] += noop.contains_one()

        fast = paired_ratio(rates[REF], rates[FAST])
        assert fast.estimate == pytest.approx(PLANTED, rel=0.01)
        assert not fast.contains_one()
        covered[FAST] += fast.low <= PLANTED <= fast.high

        twin = aa_check(rates, REF, target=0.03)
        assert twin is not None and abs(twin.speedup - 1.0) < 0.01
        covered[TWIN] += twin.passed
    # honest 95% intervals: a miss now and then, but not the steady miss of a biased design
    assert min(covered.values()) >= 8, covered


def test_block_by_block_timing_is_biased_by_the_same_drift() -> None:
    machine = Machine(drift=0.004, noise=0.005, seed=1)
    ref, noop = machine.contender(REF, 1.0), machine.contender(NOOP, 1.0)
    base = [ref(r) for r in range(40)]  # all of A's rounds first ...
    new = [noop(r) for r in range(40)]  # ... then all of the no-op's

    ratio = statistics.median(new) / statistics.median(base)
    assert abs(ratio - 1.0) > 0.01
    assert ratio < 0.9  # the later block ran on the slower machine: a "slowdown" of ~13%

    apart, (_, high) = speedup(base, new, paired=False)  # measured apart: medians, bootstrap
    assert apart < 0.9 and high < 1.0
    paired, (_, high) = speedup(base, new, paired=True)  # pairing blocks by index: no rescue
    assert paired < 0.9 and high < 1.0


def test_zero_noise_interleaved_rounds_still_have_a_finite_interval() -> None:
    machine = Machine(drift=0.004, noise=0.0)
    rates, _ = run_rounds(_contenders(machine, WORKS), UNREACHABLE, _claims(PAIRS),
                          clock=machine.clock)
    noop = paired_ratio(rates[REF], rates[NOOP])  # the shuffle alone spreads the ratios
    assert abs(noop.estimate - 1.0) < 0.01 and noop.contains_one()
    assert math.isfinite(noop.half_width)


# --- the adaptive loop: why the rounds ended ---------------------------------------------------


def test_rounds_stop_at_the_precision_target_on_low_noise() -> None:
    machine = Machine(noise=0.005, seed=2)
    seen: list[tuple[int, dict[str, float]]] = []
    precision = Precision(target=0.01, budget_s=1e9, min_rounds=3, max_rounds=200)
    rates, outcome = run_rounds(_contenders(machine, WORKS), precision, _claims(PAIRS),
                                on_round=lambda n, _, widths: seen.append((n, dict(widths))),
                                clock=machine.clock)
    assert outcome.stopped_by == "precision"
    assert precision.min_rounds <= outcome.rounds < precision.max_rounds
    assert outcome.widest <= precision.target
    assert set(outcome.widths) == {f"{new}/{base}" for base, new in PAIRS}
    assert [n for n, _ in seen] == list(range(1, outcome.rounds + 1))
    assert all(len(samples) == outcome.rounds for samples in rates.values())
    # it stopped at the first round (from min_rounds on) where every claim met the target
    early = [w for n, w in seen[:-1] if n >= precision.min_rounds]
    assert all(max(w.values()) > precision.target for w in early)


def test_rounds_stop_at_the_budget_on_high_noise() -> None:
    machine = Machine(noise=0.3, seed=4, base_cost=1.0)
    precision = Precision(target=0.01, budget_s=30.0, min_rounds=3, max_rounds=200)
    works = {REF: 1.0, TWIN: 1.0}
    rates, outcome = run_rounds(_contenders(machine, works), precision,
                                _claims([(REF, TWIN)]), clock=machine.clock)
    assert outcome.stopped_by == "budget"
    assert outcome.rounds < precision.max_rounds
    assert outcome.widest > precision.target
    assert outcome.elapsed_s == pytest.approx(machine.now)
    longest_round = max(100 / a + 100 / b for a, b in zip(rates[REF], rates[TWIN], strict=True))
    assert outcome.elapsed_s <= precision.budget_s + longest_round


def test_rounds_stop_at_max_rounds_when_the_target_is_impossible() -> None:
    machine = Machine(noise=0.05, seed=5)
    precision = Precision(target=0.0, budget_s=1e9, min_rounds=3, max_rounds=7)
    rates, outcome = run_rounds(_contenders(machine, WORKS), precision, _claims(PAIRS),
                                clock=machine.clock)
    assert outcome.stopped_by == "max_rounds" and outcome.rounds == 7
    assert all(len(samples) == 7 for samples in rates.values())
    assert outcome.to_dict()["stopped_by"] == "max_rounds"


def test_a_claim_that_cannot_be_computed_is_recorded_as_none() -> None:
    machine = Machine(noise=0.05, seed=5)
    precision = Precision(target=0.5, budget_s=1e9, min_rounds=1, max_rounds=1)
    _, outcome = run_rounds(_contenders(machine, WORKS), precision, _claims(PAIRS),
                            clock=machine.clock)
    assert outcome.stopped_by == "max_rounds" and outcome.rounds == 1
    assert set(outcome.widths.values()) == {None}
    assert outcome.widest == math.inf
    assert Outcome(1, "precision", 0.0, 0.1, 1.0, {}).widest == 0.0


def test_precision_of_takes_its_figures_from_timing() -> None:
    timing = Timing(precision=0.02, budget_s=60.0, workload_repeats=4, max_rounds=50)
    assert precision_of(timing, share=0.5) == Precision(0.02, 30.0, 4, 50)


# --- each round: every contender once, shuffled ------------------------------------------------


def test_each_round_times_every_contender_once_in_a_shuffled_order() -> None:
    machine = Machine(noise=0.05)
    precision = Precision(target=0.0, budget_s=1e9, min_rounds=3, max_rounds=8)
    run_rounds(_contenders(machine, WORKS), precision, _claims(PAIRS), seed=7,
               clock=machine.clock)
    width = len(WORKS)
    assert len(machine.log) == 8 * width
    orders = []
    for round_ in range(8):
        chunk = machine.log[round_ * width:(round_ + 1) * width]
        assert sorted(name for name, _ in chunk) == sorted(WORKS)
        assert {r for _, r in chunk} == {round_}
        orders.append(tuple(name for name, _ in chunk))
    assert len(set(orders)) > 1
    assert any(a != b for a, b in itertools.pairwise(orders))


def test_the_seed_decides_the_order() -> None:
    def orders(seed: int) -> list[tuple[str, int]]:
        machine = Machine()
        precision = Precision(target=0.0, budget_s=1e9, min_rounds=3, max_rounds=6)
        run_rounds(_contenders(machine, WORKS), precision, _claims(PAIRS), seed=seed,
                   clock=machine.clock)
        return machine.log

    assert orders(11) == orders(11)
    assert orders(11) != orders(12)


# --- the A/A check -------------------------------------------------------------------------------


def _rates_pair(ratio: float, noise: float, rounds: int = 20, seed: int = 0) -> Rates:
    rng = random.Random(seed)
    base = [100.0 * (1 + 0.2 * rng.random()) for _ in range(rounds)]
    twin = [b * ratio * math.exp(rng.gauss(0.0, noise)) for b in base]
    return {REF: base, TWIN: twin}


def test_aa_check_passes_on_identical_contenders_with_small_noise() -> None:
    check = aa_check(_rates_pair(1.0, 0.005), REF, target=0.03)
    assert check is not None
    assert check.passed and check.noise_floor == 0.0
    assert check.ci95[0] <= 1.0 <= check.ci95[1]
    assert check.half_width <= 0.03 and check.rounds == 20
    assert check.to_dict()["passed"] is True


def test_aa_check_fails_when_the_twin_is_systematically_slower() -> None:
    check = aa_check(_rates_pair(0.9, 0.005), REF, target=0.03)
    assert check is not None
    assert not check.passed
    assert check.speedup == pytest.approx(0.9, rel=0.01)
    assert check.noise_floor > 0.09


def test_aa_check_fails_on_a_noisy_machine_even_when_centred() -> None:
    check = aa_check(_rates_pair(1.0, 0.2, rounds=5), REF, target=0.01)
    assert check is not None
    assert not check.passed and check.half_width > 0.01 and check.noise_floor > 0


def test_aa_check_needs_two_rounds_of_both() -> None:
    assert aa_check({REF: [100.0], TWIN: [100.0]}, REF, target=0.03) is None
    assert aa_check({REF: [100.0, 101.0]}, REF, target=0.03) is None
    assert aa_check({REF: [100.0, 101.0], TWIN: [100.0]}, REF, target=0.03) is None


# --- paired ratios and widths ----------------------------------------------------------------


def test_paired_ratio_is_exact_for_a_constant_ratio() -> None:
    base = [100.0, 80.0, 120.0, 90.0, 150.0]
    ratio = paired_ratio(base, [2 * b for b in base])
    assert ratio.estimate == pytest.approx(2.0)
    assert ratio.low == pytest.approx(2.0) and ratio.high == pytest.approx(2.0)
    assert ratio.half_width == pytest.approx(0.0, abs=1e-12)
    assert ratio.rounds == 5 and not ratio.contains_one()


def test_paired_ratio_uses_the_common_rounds_only() -> None:
    ratio = paired_ratio([10.0, 20.0, 30.0], [20.0, 40.0])
    assert ratio.rounds == 2 and ratio.estimate == pytest.approx(2.0)


def test_paired_ratio_of_one_round_has_no_interval() -> None:
    ratio = paired_ratio([10.0], [15.0])
    assert ratio.estimate == pytest.approx(1.5)
    assert ratio.half_width == math.inf


@pytest.mark.parametrize(("base", "new"), [
    ([], []),
    ([], [1.0]),
    ([1.0, 0.0], [1.0, 1.0]),
    ([1.0, 1.0], [1.0, -2.0]),
])
def test_paired_ratio_rejects_empty_or_nonpositive_rates(base: list[float],
                                                         new: list[float]) -> None:
    with pytest.raises(ValueError, match="positive rates"):
        paired_ratio(base, new)


def test_rate_width() -> None:
    assert rate_width([5.0]) == math.inf
    assert rate_width([]) == math.inf
    assert rate_width([5.0, 5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)
    assert rate_width([90.0, 110.0, 95.0, 105.0]) > rate_width([99.0, 101.0, 99.5, 100.5])


def test_ratio_widths_are_infinite_until_two_rounds() -> None:
    widths = ratio_widths({REF: [1.0], NOOP: [1.0]}, [(REF, NOOP)])
    assert widths == {f"{NOOP}/{REF}": math.inf}
    widths = ratio_widths({REF: [1.0, 2.0], NOOP: [2.0, 4.0]}, [(REF, NOOP)])
    assert widths[f"{NOOP}/{REF}"] == pytest.approx(0.0, abs=1e-12)


# --- a round's share of a schedule -----------------------------------------------------------


def _schedule(texts: int, batch: int) -> list[list[int]]:
    return [list(range(i, min(i + batch, texts))) for i in range(0, texts, batch)]


def test_round_shares_cover_every_batch_over_consecutive_rounds() -> None:
    schedule = _schedule(238, 8)  # 30 batches, the last one short
    seen = set()
    for round_ in range(len(schedule)):
        share = round_share(schedule, 40, round_)
        assert all(batch in schedule for batch in share)
        seen |= {tuple(batch) for batch in share}
    assert seen == {tuple(batch) for batch in schedule}


def test_round_shares_move_between_rounds() -> None:
    schedule = _schedule(240, 8)
    assert round_share(schedule, 40, 0) != round_share(schedule, 40, 1)
    assert round_share(schedule, 40, 3) == round_share(schedule, 40, 3)


@pytest.mark.parametrize("asked", [1, 3, 8, 40, 100, 240, 1000])
def test_a_round_share_holds_about_the_asked_texts(asked: int) -> None:
    schedule = _schedule(240, 8)
    for round_ in range(10):
        share = round_share(schedule, asked, round_)
        held = sum(len(batch) for batch in share)
        assert held >= 8  # at least one group
        assert held <= 240
        if 8 <= asked <= 240:
            assert abs(held - asked) <= 8
        assert len({tuple(batch) for batch in share}) == len(share)  # no batch twice


def test_a_windowed_share_is_whole_consecutive_groups() -> None:
    schedule = _schedule(240, 8)  # 30 batches, 10 groups of 3
    groups = [schedule[i:i + 3] for i in range(0, 30, 3)]
    seen: set[int] = set()
    for round_ in range(10):
        share = round_share(schedule, 48, round_, window=3)
        assert len(share) % 3 == 0 and len(share) == 6  # 48 texts: two groups of 24
        for start in range(0, len(share), 3):
            group = share[start:start + 3]
            assert group in groups
            seen.add(groups.index(group))
    assert seen == set(range(10))


def test_padded_counts_each_batch_at_its_longest_text() -> None:
    assert padded([[0, 1], [2]], [3, 5, 7]) == 2 * 5 + 1 * 7
    assert padded([], [3]) == 0


# --- Share: one contender's encode calls ------------------------------------------------------


class FakeEncode:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def __call__(self, texts: list[str], batch_size: int) -> Any:
        self.calls.append((list(texts), batch_size))
        return None


def _share(bulk: bool, tokens: Sequence[int] | None = None) -> tuple[Share, FakeEncode]:
    encode = FakeEncode()
    texts = [f"text {i}" for i in range(48)]
    share = Share(encode=encode, texts=texts, tokens=tokens or [1 + i % 7 for i in range(48)],
                  schedule=_schedule(48, 4), bulk=bulk, batch_size=4, device="cpu",
                  round_texts=12)
    return share, encode


def test_a_bulk_share_makes_one_encode_call_over_its_batches() -> None:
    share, encode = _share(bulk=True)
    for round_ in range(3):
        rate = share(round_)
        picked = share.shares[-1] if share.shares else []
        assert len(picked) == 3
        assert len(encode.calls) == round_ + 1
        texts, batch_size = encode.calls[-1]
        assert texts == [share.texts[i] for batch in picked for i in batch]
        assert batch_size == 4
        assert share.calls is not None and len(share.calls[-1]) == 1
        scale = padded(share.schedule, share.tokens) / padded(picked, share.tokens)
        assert rate == pytest.approx(len(share.texts) / (sum(share.calls[-1]) * scale))
    assert share.calls is not None and len(share.calls) == 3


def test_a_stream_share_makes_one_encode_call_per_batch() -> None:
    share, encode = _share(bulk=False)
    rate = share(0)
    assert share.shares is not None and share.calls is not None
    picked = share.shares[0]
    assert len(picked) == 3
    assert encode.calls == [([share.texts[i] for i in batch], len(batch)) for batch in picked]
    assert len(share.calls[0]) == len(picked)
    scale = padded(share.schedule, share.tokens) / padded(picked, share.tokens)
    assert rate == pytest.approx(len(share.texts) / (sum(share.calls[0]) * scale))


@pytest.mark.parametrize("bulk", [True, False])
def test_the_warm_up_round_is_run_but_not_recorded(bulk: bool) -> None:
    share, encode = _share(bulk=bulk)
    assert share(-1) > 0
    assert encode.calls  # it did encode
    assert share.calls is None and share.shares is None
    share(0)
    share(1)
    assert share.calls is not None and share.shares is not None
    assert len(share.calls) == 2 and len(share.shares) == 2


# --- time-sized shares: a slow contender does not make every round long ------------------------


class CostlyEncode:
    """An encode that costs fake seconds: `cost` per padded token (a batch of its longest text)."""

    def __init__(self, clock: list[float], tokens: Sequence[int], cost: float) -> None:
        self.clock, self.tokens, self.cost = clock, tokens, cost
        self.index = {f"text {i}": i for i in range(len(tokens))}

    def __call__(self, texts: list[str], batch_size: int) -> Any:
        for start in range(0, len(texts), batch_size):
            batch = [self.index[t] for t in texts[start:start + batch_size]]
            self.clock[0] += self.cost * len(batch) * max(self.tokens[i] for i in batch)


@pytest.mark.parametrize("bulk", [True, False])
def test_shares_fitted_to_their_warm_up_take_about_the_asked_seconds(
        bulk: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("profiler.workloads.time.perf_counter", lambda: clock[0])
    tokens = [5 + i % 11 for i in range(240)]
    texts = [f"text {i}" for i in range(240)]
    shares = {cost: Share(CostlyEncode(clock, tokens, cost), texts, tokens,
                          _schedule(240, 4), bulk, 4, "cpu", round_texts=40)
              for cost in (0.001, 0.004)}  # one contender four times slower per token
    for share in shares.values():
        share.fit(share(-1), seconds=0.5)
    fast, slow = shares[0.001].round_texts, shares[0.004].round_texts
    assert fast == pytest.approx(4 * slow, rel=0.1)
    for share in shares.values():
        took = []
        for round_ in range(6):
            before = clock[0]
            share(round_)
            took.append(clock[0] - before)
        # whole batches of 4 texts: within a batch's worth of the asked time
        assert statistics.mean(took) == pytest.approx(0.5, rel=0.25)
        assert all(len(batch) == 4 for picked in share.shares or [] for batch in picked)


def test_a_share_holds_one_batch_even_when_one_batch_takes_longer_than_asked() -> None:
    share, _ = _share(bulk=False)
    share.fit(rate=10.0, seconds=0.01)  # 0.1 texts: less than one batch of 4
    share(0)
    assert share.shares is not None and len(share.shares[0]) == 1
    assert len(share.shares[0][0]) == 4


def test_shares_are_sized_so_twice_the_minimum_rounds_fit_the_budget() -> None:
    precision = Precision(target=0.03, budget_s=60.0, min_rounds=5, max_rounds=200)
    assert precision.share_s(contenders=6) == pytest.approx(60.0 / (2 * 5 * 6))
    machine = Machine()
    _, outcome = run_rounds(_contenders(machine, {REF: 1.0, TWIN: 1.0}), precision,
                            _claims([(REF, TWIN)]), clock=machine.clock,
                            share_s=precision.share_s(2))
    assert outcome.share_s == pytest.approx(3.0)
    assert Outcome.from_dict({k: v for k, v in outcome.to_dict().items()
                              if k != "share_s"}).share_s is None  # a run from before


def test_aligned_shares_of_one_schedule_run_the_same_batches_every_round() -> None:
    """Two configurations at the same batch size, one twice as fast, fitted to different sizes:
    aligned, both take the fewer texts, and each round both encode the same batches."""
    fast, _ = _share(bulk=False)
    slow, _ = _share(bulk=False)
    other = Share(encode=FakeEncode(), texts=fast.texts, tokens=fast.tokens,
                  schedule=_schedule(48, 8), bulk=False, batch_size=8, device="cpu",
                  round_texts=12)
    fast.fit(rate=200.0, seconds=0.1)
    slow.fit(rate=100.0, seconds=0.1)
    other.fit(rate=300.0, seconds=0.1)
    align([fast, slow, other])
    assert fast.round_texts == slow.round_texts == 10
    assert other.round_texts == 30  # another schedule keeps its own size
    for round_ in range(4):
        fast(round_)
        slow(round_)
    assert fast.shares == slow.shares
