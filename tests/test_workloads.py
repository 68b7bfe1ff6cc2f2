"""Workload schedules and their padding, checked by hand; the request; window latencies."""

from __future__ import annotations

import pytest

from profiler.measure.flops import batch_flops, flops_per_token
from profiler.workloads import (
    bulk_schedule,
    padding_of,
    query_schedule,
    request_of,
    schedule_for,
    stream_schedule,
    token_budget_schedule,
    window_latencies_ms,
    window_sorted_schedule,
)

CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
          "num_attention_heads": 2}
# arrival order alternates long and short texts: the worst case for a stream
TEXTS = ["a much longer text here", "short", "another long text in it", "tiny"]
TOKENS = [10, 2, 9, 3]


def test_bulk_sorts_by_characters_longest_first_like_sentence_transformers() -> None:
    assert bulk_schedule(TEXTS, 2) == [[0, 2], [1, 3]]
    assert stream_schedule(4, 2) == [[0, 1], [2, 3]]
    assert stream_schedule(5, 2) == [[0, 1], [2, 3], [4]]
    assert query_schedule(3) == [[0], [1], [2]]
    assert schedule_for("query", TEXTS, 8) == [[0], [1], [2], [3]]


def test_real_and_padded_tokens_by_hand() -> None:
    stream = padding_of(stream_schedule(4, 2), TOKENS, CONFIG)
    bulk = padding_of(bulk_schedule(TEXTS, 2), TOKENS, CONFIG)
    query = padding_of(query_schedule(4), TOKENS, CONFIG)
    assert stream.real_tokens == bulk.real_tokens == query.real_tokens == 24
    assert stream.padded_tokens == 2 * 10 + 2 * 9  # each batch pads to its longest: 38
    assert bulk.padded_tokens == 2 * 10 + 2 * 3  # [10, 9] and [2, 3]: 26
    assert stream.real_share == pytest.approx(24 / 38)
    assert bulk.real_share == pytest.approx(24 / 26)
    assert query.real_share == 1.0
    assert stream.real_share < bulk.real_share < query.real_share


def test_executed_and_useful_flops_by_hand() -> None:
    stream = padding_of(stream_schedule(4, 2), TOKENS, CONFIG)
    assert stream.flops_executed == pytest.approx(batch_flops(CONFIG, 2, 10)
                                                  + batch_flops(CONFIG, 2, 9))
    useful = sum(n * flops_per_token(CONFIG, n) for n in TOKENS)
    assert stream.flops_useful == pytest.approx(useful)
    assert padding_of(query_schedule(4), TOKENS, CONFIG).flops_executed == pytest.approx(useful)


def test_window_sorting_groups_similar_lengths_within_each_window_only() -> None:
    texts = ["xxxxxxxx", "x", "xxxxxxx", "xx", "xxxxxx", "xxx"]
    assert window_sorted_schedule(texts, 2, 3) == [[0, 2], [4, 5], [3, 1]]
    assert window_sorted_schedule(texts, 2, 1) == [[0, 1], [2, 3], [4, 5]]  # no window: stream


def test_token_budget_closes_a_batch_before_its_padded_size_passes_the_budget() -> None:
    assert token_budget_schedule([10, 2, 9, 3], 20) == [[0, 1], [2, 3]]
    assert token_budget_schedule([10, 2, 9, 3], 30) == [[0, 1, 2], [3]]
    assert token_budget_schedule([2, 2, 2, 2, 2], 6) == [[0, 1, 2], [3, 4]]
    assert token_budget_schedule([5, 50, 5], 10) == [[0], [1], [2]]  # a text alone may pass it


def test_window_latency_counts_from_a_full_window_to_the_end_of_the_text_batch() -> None:
    schedule = [[0, 1], [2, 3], [4]]
    assert window_latencies_ms([0.1, 0.2, 0.3], schedule, 2) == pytest.approx(
        [100, 100, 300, 300, 300])
    assert window_latencies_ms([0.1, 0.2, 0.3], schedule, 1) == pytest.approx(
        [100, 100, 200, 200, 300])


def test_a_request_spreads_over_a_large_corpus_and_cycles_a_small_one() -> None:
    corpus = [f"t{i}" for i in range(10)]
    assert request_of(corpus, 5) == ["t0", "t2", "t4", "t6", "t8"]
    assert request_of(corpus, 10) == corpus
    assert request_of(corpus, 12) == [*corpus, "t0", "t1"]
