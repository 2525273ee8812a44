"""Benchmarks: speed as ratios measured in one run, gated on correctness (see benchmarks/README.md)."""
