"""Benchmarks of the scorer, its ceilings, reloads, the trainer and the EIF (``python -m bench.run``)."""
