"""Altair (Vega-Lite) charts, one function per study; each returns a list of Chart objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import altair as alt

from profiler.analysis.quality import pareto_front

if TYPE_CHECKING:
    from profiler.studies.batch_size import BatchSizeResult, WorkloadPoint
    from profiler.studies.leak import LeakResult
    from profiler.studies.memory import MemoryPoint, MemoryResult
    from profiler.studies.optimizations import OptimizationsResult
    from profiler.studies.serving import ServingResult
    from profiler.studies.stages import StagesResult
    from profiler.studies.text_length import TextLengthResult

WIDTH = "container"  # the page's CSS gives every chart box a width; see charts.css
HEIGHT = 300


def batch_size_charts(result: BatchSizeResult) -> list[tuple[str, Any]]:
    """Throughput per workload, padding per workload and stream latency, against batch size."""
    points = result.points
    return [("Throughput against batch size: bulk and stream (dashed: single queries)",
             throughput_chart(points, result)),
            ("Real tokens as a share of computed tokens", padding_chart(points)),
            ("Latency per stream batch against batch size",
             latency_chart([p for p in points if p.workload == "stream"]))]


def _size_axis(points: list[WorkloadPoint]) -> Any:
    sizes = sorted({p.batch_size for p in points})
    return alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="Batch size",
                 axis=alt.Axis(values=sizes))


def throughput_chart(points: list[WorkloadPoint], result: BatchSizeResult) -> Any:
    """Median throughput per workload with its min-max range; the chosen size is marked."""
    choice = result.choices.get(result.workload)
    chosen = choice.recommended_batch_size if choice else None
    rows = [{"batch_size": p.batch_size, "workload": p.workload,
             "median": p.throughput_texts_per_s.median, "min": p.throughput_texts_per_s.min,
             "max": p.throughput_texts_per_s.max, "cv_pct": 100 * p.throughput_texts_per_s.cv,
             "recommended": p.workload == result.workload and p.batch_size == chosen}
            for p in points]
    base = alt.Chart(alt.Data(values=rows)).encode(x=_size_axis(points))
    color = alt.Color("workload:N", title="Workload")
    line = base.mark_line(point=True).encode(
        y=alt.Y("median:Q", title="Throughput (texts/s, median)"), color=color,
        tooltip=["workload:N", "batch_size:Q", alt.Tooltip("median:Q", format=",.1f"),
                 alt.Tooltip("min:Q", format=",.1f"), alt.Tooltip("max:Q", format=",.1f"),
                 alt.Tooltip("cv_pct:Q", format=".1f", title="CV %")])
    band = base.mark_errorbar().encode(y=alt.Y("min:Q", title=""), y2="max:Q", color=color)
    star = base.transform_filter("datum.recommended").mark_point(
        shape="diamond", size=180, filled=True, color="#d62728").encode(y="median:Q")
    query = result.query.throughput_texts_per_s.median
    rule = alt.Chart(alt.Data(values=[{"query": query}])).mark_rule(
        strokeDash=[6, 4], color="#7f7f7f").encode(
        y="query:Q", tooltip=[alt.Tooltip("query:Q", format=",.1f", title="query texts/s")])
    return _sized(band + line + star + rule)


def padding_chart(points: list[WorkloadPoint]) -> Any:
    """Real tokens over padded tokens per workload and batch size."""
    rows = [{"batch_size": p.batch_size, "workload": p.workload,
             "real_pct": 100 * p.padding.real_share} for p in points]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=_size_axis(points), y=alt.Y("real_pct:Q", title="Real / computed tokens (%)",
                                      scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("workload:N", title="Workload"),
        tooltip=["workload:N", "batch_size:Q", alt.Tooltip("real_pct:Q", format=".1f")])
    return _sized(chart)


def latency_chart(points: list[WorkloadPoint]) -> Any:
    """p50, p95 and p99 latency per call, on a log scale."""
    rows = [{"batch_size": p.batch_size, "percentile": name,
             "latency_ms": getattr(p.call_latency_ms, name)}
            for p in points for name in ("p50", "p95", "p99")]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=_size_axis(points),
        y=alt.Y("latency_ms:Q", scale=alt.Scale(type="log"), title="Latency per batch (ms)"),
        color=alt.Color("percentile:N", title="Percentile"),
        tooltip=["batch_size:Q", "percentile:N", alt.Tooltip("latency_ms:Q", format=",.2f")])
    return _sized(chart)


def text_length_charts(result: TextLengthResult) -> list[tuple[str, Any]]:
    """Throughput and tokens per text against text length, with the truncation point marked."""
    return [("Throughput against text length", length_throughput_chart(result)),
            ("Tokens per text against text length", length_tokens_chart(result))]


def length_throughput_chart(result: TextLengthResult) -> Any:
    """Median throughput per target length; a rule where the model starts truncating."""
    rows = [{"chars": p.target_chars, "median": p.throughput_texts_per_s.median,
             "tokens_per_s": p.tokens_per_s} for p in result.points]
    x = alt.X("chars:Q", scale=alt.Scale(type="log"), title="Text length (characters)",
              axis=alt.Axis(values=[r["chars"] for r in rows]))
    line = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=x, y=alt.Y("median:Q", scale=alt.Scale(type="log"),
                     title="Throughput (texts/s, median, log scale)"),
        tooltip=["chars:Q", alt.Tooltip("median:Q", format=",.1f"),
                 alt.Tooltip("tokens_per_s:Q", format=",.0f")])
    return _sized(_with_truncation_rule(line, result.truncation_chars))


def length_tokens_chart(result: TextLengthResult) -> Any:
    """Tokens the model sees per text (after truncation) and before, with the token limit."""
    rows = [{"chars": p.target_chars, "tokens": tokens, "kind": kind}
            for p in result.points
            for tokens, kind in ((p.raw_tokens_per_text_mean, "in the text"),
                                 (p.tokens_per_text_mean, "seen by the model"))]
    line = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("chars:Q", scale=alt.Scale(type="log"), title="Text length (characters)",
                axis=alt.Axis(values=[p.target_chars for p in result.points])),
        y=alt.Y("tokens:Q", title="Tokens per text (mean)"),
        color=alt.Color("kind:N", title="Tokens"),
        tooltip=["chars:Q", "kind:N", alt.Tooltip("tokens:Q", format=",.1f")])
    limit = alt.Chart(alt.Data(values=[{"limit": result.max_seq_length}])).mark_rule(
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


def stages_charts(result: StagesResult) -> list[tuple[str, Any]]:
    """Stacked share of each stage per batch size."""
    rows = [{"batch_size": str(p.batch_size), "stage": stage, "order": i,
             "share_pct": 100 * p.stage_share[stage], "ms": p.stage_ms_per_batch[stage].median}
            for p in result.points for i, stage in enumerate(result.stages)]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("batch_size:O", sort=None, title="Batch size"),
        y=alt.Y("share_pct:Q", stack="zero", title="Share of encoding time (%)"),
        color=alt.Color("stage:N", sort=result.stages, title="Stage"),
        order=alt.Order("order:Q"),
        tooltip=["batch_size:O", "stage:N", alt.Tooltip("share_pct:Q", format=".1f"),
                 alt.Tooltip("ms:Q", format=",.2f", title="median ms per batch")])
    return [("Share of time per stage against batch size", _sized(chart))]


def memory_charts(result: MemoryResult) -> list[tuple[str, Any]]:
    """RSS at each step per batch size, and the peak increase with its fitted line."""
    return [("RSS before loading, after loading and at peak, per batch size",
             memory_levels_chart(result.points)),
            ("Peak increase over the loaded model against batch size, with the fitted line",
             memory_fit_chart(result))]


def memory_levels_chart(points: list[MemoryPoint]) -> Any:
    """Grouped lines: RSS before the model loads, after it loads, and the encode peak."""
    steps = (("rss_before_load_mb", "before load"), ("rss_after_load_mb", "after load"),
             ("peak_rss_mb", "peak while encoding"))
    rows = [{"batch_size": p.batch_size, "step": label, "order": i, "mb": getattr(p, key)}
            for p in points for i, (key, label) in enumerate(steps)]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="Batch size",
                axis=alt.Axis(values=[p.batch_size for p in points])),
        y=alt.Y("mb:Q", title="Resident memory (MB)", scale=alt.Scale(zero=False)),
        color=alt.Color("step:N", sort=[label for _, label in steps], title="When"),
        tooltip=["batch_size:Q", "step:N", alt.Tooltip("mb:Q", format=",.1f")])
    return _sized(chart)


def memory_fit_chart(result: MemoryResult) -> Any:
    """Measured peak increase per batch size, and the least-squares line through it."""
    points, fit = result.points, result.fit
    rows = [{"batch_size": p.batch_size, "mb": p.peak_increase_mb} for p in points]
    x = alt.X("batch_size:Q", title="Batch size")
    chart = alt.Chart(alt.Data(values=rows)).mark_point(filled=True, size=70).encode(
        x=x, y=alt.Y("mb:Q", title="Peak RSS increase while encoding (MB)"),
        tooltip=["batch_size:Q", alt.Tooltip("mb:Q", format=",.1f")])
    if fit:
        ends = [min(r["batch_size"] for r in rows), max(r["batch_size"] for r in rows)]
        line_rows = [{"batch_size": b, "mb": fit.slope * b + fit.intercept} for b in ends]
        chart += alt.Chart(alt.Data(values=line_rows)).mark_line(
            strokeDash=[6, 4], color="#d62728").encode(x=x, y="mb:Q")
    return _sized(chart)


def leak_charts(result: LeakResult) -> list[tuple[str, Any]]:
    """RSS after every iteration, warm-up included, with the steady-state line."""
    warm = result.warmup_rss_mb
    rows = [{"iteration": i - len(warm) + 1, "mb": mb,
             "phase": "warm-up" if i < len(warm) else
             ("steady state" if i - len(warm) >= result.steady_from else "settling")}
            for i, mb in enumerate([*warm, *result.rss_mb])]
    x = alt.X("iteration:Q", title="Iteration (warm-up at 0 and below)")
    points = alt.Chart(alt.Data(values=rows)).mark_line(point=True, color="#999").encode(
        x=x, y=alt.Y("mb:Q", title="RSS after the iteration (MB)", scale=alt.Scale(zero=False)),
        tooltip=["iteration:Q", "phase:N", alt.Tooltip("mb:Q", format=",.2f")])
    dots = points.mark_point(filled=True, size=60).encode(color=alt.Color("phase:N", title=""))
    fit, start, n = result.fit, result.steady_from, len(result.rss_mb)
    line_rows = [{"iteration": i + 1, "mb": fit.slope * i + fit.intercept} for i in (start, n - 1)]
    line = alt.Chart(alt.Data(values=line_rows)).mark_line(
        strokeDash=[6, 4], color="#d62728").encode(x=x, y="mb:Q")
    return [("RSS per iteration with the steady-state fit", _sized(points + dots + line))]


def optimizations_charts(result: OptimizationsResult) -> list[tuple[str, Any]]:
    """Speedup against quality loss with the threshold drawn, and efficiency against peak."""
    return [("Speedup over fp32 against quality loss (red dashes: the cosine bound; grey line: "
             "the speed-quality front)", speedup_quality_chart(result)),
            ("Achieved GFLOP/s as a share of the measured matmul peak",
             efficiency_chart(result))]


def speedup_quality_chart(result: OptimizationsResult) -> Any:
    """One point per measured experiment: speedup with its interval, 1 − mean cosine."""
    criterion = result.criterion
    rows = [{"experiment": e.title, "name": e.name, "speedup": e.speedup,
             "low": e.speedup_ci95[0], "high": e.speedup_ci95[1],
             "loss": max(0.0, 1 - e.quality.cosine_mean), "cosine": e.quality.cosine_mean,
             "recall": e.quality.neighbour_overlap_mean,
             "keeps quality": "no" if criterion.missed(e.quality) else "yes"}
            for e in result.experiments if e.is_measured and e.quality and e.speedup_ci95]
    x = alt.X("loss:Q", scale=alt.Scale(type="symlog", constant=1e-4),
              title="Quality loss: 1 − mean cosine to fp32 (symlog scale)")
    base = alt.Chart(alt.Data(values=rows)).encode(x=x)
    bars = base.mark_rule().encode(y=alt.Y("low:Q", title="Speedup over fp32 (×)"), y2="high:Q")
    # names go in the legend, not beside the points: lossless rows share x = 0 and would overlap
    dots = base.mark_point(filled=True, size=90).encode(
        y="speedup:Q", color=alt.Color("experiment:N", title="Configuration",
                                       legend=alt.Legend(orient="bottom", columns=2)),
        shape=alt.Shape("keeps quality:N", title="Keeps quality"),
        tooltip=["experiment:N", alt.Tooltip("speedup:Q", format=".2f"),
                 alt.Tooltip("low:Q", format=".2f"), alt.Tooltip("high:Q", format=".2f"),
                 alt.Tooltip("cosine:Q", format=".6f"), alt.Tooltip("recall:Q", format=".3f")])
    rule = alt.Chart(alt.Data(values=[{"loss": 1 - criterion.cosine_mean}])).mark_rule(
        strokeDash=[6, 4], color="#d62728").encode(x="loss:Q")
    on_front = {row["name"] for row in pareto_front(result.experiments)}
    front = alt.Chart(alt.Data(values=[r for r in rows if r["name"] in on_front])).mark_line(
        color="#888", strokeDash=[2, 2]).encode(x="loss:Q", y="speedup:Q", order="loss:Q")
    one = alt.Chart(alt.Data(values=[{"speedup": 1.0}])).mark_rule(color="#999").encode(
        y="speedup:Q")
    return _sized(bars + front + dots + rule + one)


def efficiency_chart(result: OptimizationsResult) -> Any:
    """% of the measured peak per measured experiment: all FLOPs executed, and useful ones."""
    rows = [{"what": e.title, "kind": kind, "pct": pct, "gflops": gflops}
            for e in result.experiments if e.is_measured and e.peak_pct
            for kind, pct, gflops in (("executed", e.peak_pct, e.gflops_per_s),
                                      ("useful", e.useful_peak_pct, e.useful_gflops_per_s))]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        y=alt.Y("what:N", sort=None, title=None), yOffset="kind:N",
        x=alt.X("pct:Q", title="% of measured matmul peak for its dtype"),
        color=alt.Color("kind:N", title="FLOPs"),
        tooltip=["what:N", "kind:N", alt.Tooltip("gflops:Q", format=",.1f", title="GFLOP/s"),
                 alt.Tooltip("pct:Q", format=".1f", title="% of peak")])
    return chart.properties(width=WIDTH, height=max(HEIGHT, 30 * len(rows)))


def serving_charts(result: ServingResult) -> list[tuple[str, Any]]:
    """Capacity per setting; latency, queueing and batches against load; prediction; fleet."""
    slo = result.slo
    target = f"p{slo.percentile:g} ≤ {slo.target_ms:g} ms"
    return [(f"Capacity at {target} per batcher setting", capacity_chart(result)),
            ("Latency against offered load (best setting of each batcher; dashed: the target)",
             load_latency_chart(result)),
            ("Where a request's time goes: queueing and computing, against load (the best "
             "setting)",
             queue_compute_chart(result)),
            (f"Simulated against measured p{slo.percentile:g} latency",
             prediction_chart(result)),
            ("Latency of the planned fleet against load (simulated)",
             fleet_chart(result))]


def capacity_chart(result: ServingResult) -> Any:
    """Highest passing rate per configuration and setting; unconfirmed ones drawn lighter."""
    rows = [{"setting": f"{c.name}: {s.label}", "capacity": s.capacity.rate_rps,
             "confirmed": "confirmed" if s.capacity.confirmed else "not confirmed",
             "failed": s.capacity.failed_rps}
            for c in result.configs for s in c.settings]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        y=alt.Y("setting:N", sort="-x", title=None),
        x=alt.X("capacity:Q", title="Requests/s within the latency target"),
        opacity=alt.Opacity("confirmed:N", scale=alt.Scale(domain=["confirmed", "not confirmed"],
                                                           range=[1.0, 0.45]), title=None),
        tooltip=["setting:N", alt.Tooltip("capacity:Q", format=",.1f"), "confirmed:N",
                 alt.Tooltip("failed:Q", format=",.1f", title="lowest failing rate")])
    return chart.properties(width=WIDTH, height=max(HEIGHT // 2, 34 * len(rows)))


def _curve_rows(result: ServingResult) -> list[dict[str, Any]]:
    return [{"batcher": c.label, "rate": p.rate_rps, "percentile": name,
             "latency_ms": p.latency_ms[name], "queue_ms": p.queue_ms_mean,
             "compute_ms": p.compute_ms_mean, "batch": p.batch_texts_mean,
             "busy_pct": 100 * p.busy_share, "dropped": p.dropped, "verdict": p.verdict}
            for c in result.curves for p in c.points for name in ("p50", "p95", "p99")]


def _target_rule(result: ServingResult) -> Any:
    return alt.Chart(alt.Data(values=[{"target": result.slo.target_ms}])).mark_rule(
        strokeDash=[6, 4], color="#d62728").encode(y="target:Q")


def load_latency_chart(result: ServingResult) -> Any:
    """p50/p95/p99 latency against offered load: the hockey stick."""
    chart = alt.Chart(alt.Data(values=_curve_rows(result))).mark_line(point=True).encode(
        x=alt.X("rate:Q", title="Offered load (requests/s)"),
        y=alt.Y("latency_ms:Q", scale=alt.Scale(type="log"), title="Latency (ms)"),
        color=alt.Color("batcher:N", title="Batcher"),
        strokeDash=alt.StrokeDash("percentile:N", title="Percentile"),
        tooltip=["batcher:N", "percentile:N", alt.Tooltip("rate:Q", format=",.1f"),
                 alt.Tooltip("latency_ms:Q", format=",.1f"), alt.Tooltip("batch:Q", format=".2f",
                                                                         title="texts per batch"),
                 alt.Tooltip("busy_pct:Q", format=".0f", title="worker busy %"), "dropped:Q",
                 "verdict:N"])
    return _sized(chart + _target_rule(result))


def queue_compute_chart(result: ServingResult) -> Any:
    """Mean queueing and computing time per request at each load, for the best setting."""
    best = result.curves[0]
    rows = [{"rate": round(p.rate_rps, 2), "part": part, "ms": ms, "batch": p.batch_texts_mean}
            for p in best.points
            for part, ms in (("queue", p.queue_ms_mean), ("compute", p.compute_ms_mean))]
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("rate:O", title=f"Offered load (requests/s), {best.label}"),
        y=alt.Y("ms:Q", stack="zero", title="Mean time per request (ms)"),
        color=alt.Color("part:N", title="Time"),
        tooltip=["rate:O", "part:N", alt.Tooltip("ms:Q", format=",.1f"),
                 alt.Tooltip("batch:Q", format=".2f", title="texts per batch")])
    return _sized(chart)


def prediction_chart(result: ServingResult) -> Any:
    """The simulation's percentile latency beside the measured one, at the measured loads."""
    rows = [{"rate": p.rate_rps, "source": source, "latency_ms": ms}
            for p in result.prediction.curve
            for source, ms in (("measured", p.measured_ms), ("predicted", p.predicted_ms))]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("rate:Q", title="Offered load (requests/s)"),
        y=alt.Y("latency_ms:Q", scale=alt.Scale(type="log"), title="Latency (ms)"),
        color=alt.Color("source:N", title=None),
        tooltip=["source:N", alt.Tooltip("rate:Q", format=",.1f"),
                 alt.Tooltip("latency_ms:Q", format=",.1f")])
    return _sized(chart + _target_rule(result))


def fleet_chart(result: ServingResult) -> Any:
    """Simulated latency of the planned replicas from half to 1.25x the target load."""
    rows = [{"balance": f"{f.balance} ({f.replicas} replicas)", "rate": p["rate_rps"],
             "percentile": name, "latency_ms": p[name]}
            for f in result.fleet if f.replicas for p in f.curve
            for name in ("p50", "p95", "p99")]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("rate:Q", title="Offered load (requests/s)"),
        y=alt.Y("latency_ms:Q", scale=alt.Scale(type="log"), title="Latency (ms)"),
        color=alt.Color("balance:N", title="Load balancing"),
        strokeDash=alt.StrokeDash("percentile:N", title="Percentile"),
        tooltip=["balance:N", "percentile:N", alt.Tooltip("rate:Q", format=",.0f"),
                 alt.Tooltip("latency_ms:Q", format=",.1f")])
    return _sized(chart + _target_rule(result))


def _sized(chart: Any) -> Any:
    return chart.properties(width=WIDTH, height=HEIGHT)


CHARTS: dict[str, Callable[[Any], list[tuple[str, Any]]]] = {
    "batch_size": batch_size_charts,
    "text_length": text_length_charts,
    "memory": memory_charts,
    "leak": leak_charts,
    "stages": stages_charts,
    "optimizations": optimizations_charts,
    "serving": serving_charts,
}
