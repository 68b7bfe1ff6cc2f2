"""Study processes: the runner under Scalene, the worker inside it, memory and cold-start probes."""
