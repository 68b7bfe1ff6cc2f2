"""The history of runs: its store, each run tracked and judged, runs brought in from elsewhere."""
