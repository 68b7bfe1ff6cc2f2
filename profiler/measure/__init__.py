"""Measurement primitives: statistics, timers, memory sampling, system information."""
