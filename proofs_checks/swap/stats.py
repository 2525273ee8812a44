"""Confidence intervals over seeds: the Student t interval, with the t quantile computed without scipy.

For s seeds with values x_i, mean m and sample standard deviation sd (divisor s - 1), the 95% interval is
m +- t_{0.975, s-1} sd / sqrt(s). It assumes the seeds' results are independent draws from a normal distribution;
with 3 seeds the quantile is 4.30, so the interval is wide by construction, which is the honest statement about
three runs.

The quantile inverts the t distribution's CDF, which for an integer number of degrees of freedom nu has a finite
closed form (Abramowitz & Stegun 26.7.3-26.7.4): with theta = atan(t / sqrt(nu)), A(t | nu) = P(|T| < t) is
  nu odd:  (2 / pi) (theta + sin theta cos theta (1 + 2/3 cos^2 + (2 4)/(3 5) cos^4 + ... , nu - 1 terms in all)),
           for nu = 1 just 2 theta / pi;
  nu even: sin theta (1 + 1/2 cos^2 + (1 3)/(2 4) cos^4 + ... , nu / 2 terms in all),
and A is increasing in t, so bisection finds the quantile to machine precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_ci", "student_t_quantile", "t_two_sided_mass"]


def t_two_sided_mass(t: float, nu: int) -> float:
    """A(t | nu) = P(|T| < t) for Student's t with ``nu`` >= 1 (integer) degrees of freedom, t >= 0."""
    if nu < 1:
        raise ValueError(f"nu must be an integer >= 1, got {nu}")
    theta = math.atan(t / math.sqrt(nu))
    c2 = math.cos(theta) ** 2
    if nu % 2 == 1:
        if nu == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for i in range(1, (nu - 1) // 2):  # terms (2 4 ... 2i) / (3 5 ... (2i + 1)) cos^(2i)
            term *= c2 * (2 * i) / (2 * i + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for i in range(1, nu // 2):  # terms (1 3 ... (2i - 1)) / (2 4 ... 2i) cos^(2i)
        term *= c2 * (2 * i - 1) / (2 * i)
        total += term
    return math.sin(theta) * total


def student_t_quantile(p: float, nu: int) -> float:
    """The p-quantile (p in (0.5, 1)) of Student's t with ``nu`` degrees of freedom, by bisection on A."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    mass = 2 * p - 1
    low, high = 0.0, 1.0
    while t_two_sided_mass(high, nu) < mass:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_two_sided_mass(mid, nu) < mass:
            low = mid
        else:
            high = mid
        if high - low <= 4 * math.ulp(high):
            break
    return (low + high) / 2


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the Student t interval at ``level`` over the values; (mean, None, None) for one value."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    count = len(values)
    mean = math.fsum(values) / count
    if count == 1:
        return mean, None, None
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (count - 1))
    half = student_t_quantile(0.5 + level / 2, count - 1) * sd / math.sqrt(count)
    return mean, mean - half, mean + half
