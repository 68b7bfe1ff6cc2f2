"""Terminal progress while studies run, and the one-screen summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table


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

    def _finish(self, summary: str) -> None:
        if self.task is None:
            return
        self.progress.update(self.task, total=1, completed=1, detail=summary)
        self.progress.stop_task(self.task)
        self.task = None


def print_summary(console: Console, summary: dict[str, Any], site: Path | None) -> None:
    """Print the headline figures, where the results are and where the site is."""
    table = Table(title=f"Run {summary['run_id']} on {summary['device']}", show_header=False)
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
        table.add_row("Site", f"{site}/index.html  (mkdocs serve to browse)")
    console.print(table)
