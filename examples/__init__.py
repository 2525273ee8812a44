"""Worked examples: the differential harness on third-party kernels (see docs/differential_harness.md)."""
