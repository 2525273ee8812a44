"""Shared test configuration.

Hypothesis profiles (select with HYPOTHESIS_PROFILE=<name>; CI=true selects "ci"):
  dev   quick local runs;   ci   what CI runs (the counts the closing notes report);   deep   long searches.
No deadline: float64 oracles at T ~ 100 take tens of milliseconds and mpmath runs far longer; a deadline would
only make timing noise fail a test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          print_blob=True)
settings.register_profile("deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
