"""Altair (Vega-Lite) charts, one function per study; each returns a list of Chart objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt

WIDTH = "container"  # the page's CSS gives every chart box a width; see charts.css
HEIGHT = 300


def batch_size_charts(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """Throughput, latency percentiles and peak memory against batch size."""
    points = result["points"]
    return [("Throughput against batch size", throughput_chart(points, result)),
            ("Latency per batch against batch size", latency_chart(points)),
            ("Peak RSS increase against batch size", memory_chart(points))]


def throughput_chart(points: list[dict[str, Any]], result: dict[str, Any]) -> Any:
    """Median throughput with its min-max range; the recommended batch size is marked."""
    rows = [{"batch_size": p["batch_size"], "median": p["throughput_texts_per_s"]["median"],
             "min": p["throughput_texts_per_s"]["min"], "max": p["throughput_texts_per_s"]["max"],
             "cv_pct": 100 * p["throughput_texts_per_s"]["cv"],
             "recommended": p["batch_size"] == result["recommended_batch_size"]} for p in points]
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="Batch size",
                axis=alt.Axis(values=[r["batch_size"] for r in rows])))
    line = base.mark_line(point=True).encode(
        y=alt.Y("median:Q", title="Throughput (texts/s, median)"),
        tooltip=["batch_size:Q", alt.Tooltip("median:Q", format=",.1f"),
                 alt.Tooltip("min:Q", format=",.1f"), alt.Tooltip("max:Q", format=",.1f"),
                 alt.Tooltip("cv_pct:Q", format=".1f", title="CV %")])
    band = base.mark_errorbar().encode(y=alt.Y("min:Q", title=""), y2="max:Q")
    star = base.transform_filter("datum.recommended").mark_point(
        shape="diamond", size=180, filled=True, color="#d62728").encode(y="median:Q")
    return _sized(band + line + star)


def latency_chart(points: list[dict[str, Any]]) -> Any:
    """p50, p95 and p99 latency per batch, on a log scale."""
    rows = [{"batch_size": p["batch_size"], "percentile": name,
             "latency_ms": p["batch_latency_ms"][name]}
            for p in points for name in ("p50", "p95", "p99")]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="Batch size",
                axis=alt.Axis(values=[p["batch_size"] for p in points])),
        y=alt.Y("latency_ms:Q", scale=alt.Scale(type="log"), title="Latency per batch (ms)"),
        color=alt.Color("percentile:N", title="Percentile"),
        tooltip=["batch_size:Q", "percentile:N", alt.Tooltip("latency_ms:Q", format=",.2f")])
    return _sized(chart)


def memory_chart(points: list[dict[str, Any]]) -> Any:
    """Peak RSS above the level before each batch size was measured."""
    rows = [{"batch_size": str(p["batch_size"]), "mb": p["peak_rss_increase_mb"]}
            for p in points]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("batch_size:O", sort=None, title="Batch size"),
        y=alt.Y("mb:Q", title="Peak RSS increase (MB)"),
        tooltip=["batch_size:O", alt.Tooltip("mb:Q", format=",.1f")])
    return _sized(chart)


def text_length_charts(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """Throughput and tokens per text against text length, with the truncation point marked."""
    return [("Throughput against text length", length_throughput_chart(result)),
            ("Tokens per text against text length", length_tokens_chart(result))]


def length_throughput_chart(result: dict[str, Any]) -> Any:
    """Median throughput per target length; a rule where the model starts truncating."""
    rows = [{"chars": p["target_chars"], "median": p["throughput_texts_per_s"]["median"],
             "tokens_per_s": p["tokens_per_s"]} for p in result["points"]]
    x = alt.X("chars:Q", scale=alt.Scale(type="log"), title="Text length (characters)",
              axis=alt.Axis(values=[r["chars"] for r in rows]))
    line = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=x, y=alt.Y("median:Q", scale=alt.Scale(type="log"),
                     title="Throughput (texts/s, median, log scale)"),
        tooltip=["chars:Q", alt.Tooltip("median:Q", format=",.1f"),
                 alt.Tooltip("tokens_per_s:Q", format=",.0f")])
    return _sized(_with_truncation_rule(line, result.get("truncation_chars")))


def length_tokens_chart(result: dict[str, Any]) -> Any:
    """Tokens the model sees per text (after truncation) and before, with the token limit."""
    rows = [{"chars": p["target_chars"], "tokens": p[field], "kind": kind}
            for p in result["points"]
            for field, kind in (("raw_tokens_per_text_mean", "in the text"),
                                ("tokens_per_text_mean", "seen by the model"))]
    line = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("chars:Q", scale=alt.Scale(type="log"), title="Text length (characters)",
                axis=alt.Axis(values=[p["target_chars"] for p in result["points"]])),
        y=alt.Y("tokens:Q", title="Tokens per text (mean)"),
        color=alt.Color("kind:N", title="Tokens"),
        tooltip=["chars:Q", "kind:N", alt.Tooltip("tokens:Q", format=",.1f")])
    limit = alt.Chart(alt.Data(values=[{"limit": result["max_seq_length"]}])).mark_rule(
        strokeDash=[6, 4], color="#d62728").encode(y="limit:Q")
    return _sized(line + limit)


def _with_truncation_rule(chart: Any, chars: float | None) -> Any:
    if not chars:
        return chart
    rule = alt.Chart(alt.Data(values=[{"chars": chars}])).mark_rule(
        strokeDash=[6, 4], color="#d62728").encode(x="chars:Q")
    label = rule.mark_text(align="left", dx=4, dy=-130, color="#d62728").encode(
        text=alt.value(f"truncation from ~{chars:,.0f} chars"))
    return chart + rule + label


def stages_charts(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """Stacked share of each stage per batch size."""
    rows = [{"batch_size": str(p["batch_size"]), "stage": stage, "order": i,
             "share_pct": 100 * p["stage_share"][stage],
             "ms": p["stage_ms_per_batch"][stage]["median"]}
            for p in result["points"] for i, stage in enumerate(result["stages"])]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("batch_size:O", sort=None, title="Batch size"),
        y=alt.Y("share_pct:Q", stack="zero", title="Share of encoding time (%)"),
        color=alt.Color("stage:N", sort=result["stages"], title="Stage"),
        order=alt.Order("order:Q"),
        tooltip=["batch_size:O", "stage:N", alt.Tooltip("share_pct:Q", format=".1f"),
                 alt.Tooltip("ms:Q", format=",.2f", title="median ms per batch")])
    return [("Share of time per stage against batch size", _sized(chart))]


def _sized(chart: Any) -> Any:
    return chart.properties(width=WIDTH, height=HEIGHT)


CHARTS: dict[str, Callable[[dict[str, Any]], list[tuple[str, Any]]]] = {
    "batch_size": batch_size_charts,
    "text_length": text_length_charts,
    "stages": stages_charts,
}
