"""Terminal progress while studies run, and the one-screen summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from profiler.report.site import site_size_mb


class ProgressDisplay:
    """Show one line per study configuration, updated as the child process reports repeats."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TextColumn("[dim]{task.fields[detail]}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self.task: TaskID | None = None
        self.label = ""

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish("")
        self.progress.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        """Update the display from one event sent by a study process."""
        kind = event.get("event")
        if kind == "study":
            self._finish("")
            self.console.print(f"[bold]{event['title']}[/bold]")
        elif kind in ("config", "loading"):
            self._finish("")
            self.label = str(event.get("label", ""))
            self.task = self.progress.add_task(f"  {self.label}", total=None, detail="")
        elif kind == "repeat" and self.task is not None:
            self.progress.update(self.task, detail=f"repeat {event['count']}: {event['value']}")
        elif kind == "done":
            self._finish(str(event.get("summary", "")))
        elif kind == "failed":
            self._finish("[red]stopped[/red]")
            self.console.print(f"  [red]{escape(', '.join(event['studies']))} did not finish: "
                               f"{escape(event['reason'])}[/red]", soft_wrap=True)

    def _finish(self, summary: str) -> None:
        if self.task is None:
            return
        self.progress.update(self.task, total=1, completed=1, detail=summary)
        self.progress.stop_task(self.task)
        self.task = None


def print_summary(console: Console, summary: dict[str, Any], site: Path | None) -> None:
    """Print the headline figures, where the results are and where the site is."""
    title = f"Run {summary['run_id']} on {summary['device']}"
    if not summary.get("complete", True):
        title += f" (incomplete: {', '.join(summary['missing'])} did not finish)"
    table = Table(title=escape(title), show_header=False)
    batch = summary["studies"].get("batch_size")
    if batch and batch.get("recommended_batch_size"):
        workload = batch["workload"]
        table.add_row(f"Best throughput ({workload})",
                      f"{batch['best_throughput_texts_per_s']:,.0f} texts/s "
                      f"at batch {batch['fastest_batch_size']}")
        table.add_row(f"Recommended batch size ({workload})", f"{batch['recommended_batch_size']} "
                      f"({batch['recommended_throughput_texts_per_s']:,.0f} texts/s, "
                      f"p95 {batch['recommended_latency_ms_p95']:,.1f} ms per call)")
    if batch:
        table.add_row("Single query", f"p50 {batch['query_latency_ms_p50']:,.1f} ms, "
                      f"p95 {batch['query_latency_ms_p95']:,.1f} ms")
        if batch["scalene_overhead_pct"] is not None:
            table.add_row("Scalene overhead", f"{batch['scalene_overhead_pct']:+.0f}% "
                          "(profiling on vs off, not in the figures above)")
    for rank, found in enumerate(summary.get("bottlenecks", [])[:3], start=1):
        table.add_row(f"Bottleneck {rank}", f"{found['title']}: {found['change']} saves "
                      f"{found['impact_pct']:,.0f}% ({found['severity']})")
    for study, status in summary["scalene"].items():
        if status != "profiled":
            table.add_row(f"Scalene ({study})", status)
    if site is not None:
        table.add_row("Site", f"{site}/index.html ({site_size_mb(site):,.1f} MB; "
                      "mkdocs serve to browse)")
    console.print(table)


STATE_STYLES = {"REGRESSED": "bold red", "IMPROVED": "green", "UNCHANGED": "dim",
                "INCONCLUSIVE": "yellow"}


def print_comparisons(console: Console, tracked: Any) -> None:
    """One table per comparison: each metric's before, after, change, interval and verdict."""
    for problem in tracked.problems:
        console.print(f"[yellow]comparison skipped:[/yellow] {escape(problem)}", soft_wrap=True)
    for comparison in tracked.comparisons:
        title = f"{comparison.after} vs {comparison.label} {comparison.before}"
        if not comparison.comparable:
            console.print(f"[yellow]{escape(title)}: {escape(comparison.warning or '')}[/yellow]",
                          soft_wrap=True)
            continue
        table = Table(title=title)
        for column in ("Metric", "Before", "After", "Change (interval)", "Verdict"):
            table.add_column(column)
        for row in comparison.rows:
            table.add_row(escape(row["title"]), f"{row['before']:,.4g} {row['unit']}",
                          f"{row['after']:,.4g} {row['unit']}",
                          _change(row),
                          f"[{STATE_STYLES[row['state']]}]{row['state']}[/]")
        console.print(table)
        for row in comparison.rows:
            if row.get("unreliable"):
                console.print(f"  [yellow]{escape(row['title'])}:[/yellow] {escape(row['reason'])}",
                              soft_wrap=True)
        if (smallest := comparison.detectable()) is not None:
            console.print(f"  with this noise the gate can call a change only beyond "
                          f"±{smallest:.0%} (median over the metrics)")
        if comparison.calibration:
            console.print(f"  machine calibration (fp32 matmul): "
                          f"{comparison.calibration['change']:+.1%} between the runs")
        if comparison.model_change:
            console.print(f"  model changed: {escape(comparison.model_change)}")
        for change in comparison.libraries:
            console.print(f"  library changed: {escape(change)}")
    if tracked.confirmed and tracked.confirmed["studies"]:
        console.print(f"confirmed by re-measuring: {', '.join(tracked.confirmed['studies'])}")


def _change(row: dict[str, Any]) -> str:
    """A verdict's change and interval, or why it has none (a metric that could not be judged)."""
    if None in (row.get("change"), row.get("low"), row.get("high")):
        return f"— ({row.get('reason') or 'not judged'})"
    return f"{row['change']:+.1%} ({row['low']:+.1%} to {row['high']:+.1%})"
