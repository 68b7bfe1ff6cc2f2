"""Serving capacity: open-loop load, batchers, the capacity search and its simulation.

`load` draws the requests (Poisson arrivals, texts from the corpus) and holds the early-stopping
rule; `batchers` decide when a queue becomes a batch; `engine` serves a schedule, on the real
clock with a model or on virtual time with a fitted service-time model; `capacity` searches the
highest rate that keeps a latency percentile under its target; `plan` sizes a fleet by
simulation. The study (profiler/studies/serving.py) puts them together.
"""
