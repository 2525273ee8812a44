"""Problems for the update-rule tests (spec.updates): sizes and regimes from Hypothesis, values from a seed.

A problem holds q, k [T, d_k], v [T, d_v], gates a [T], strengths beta [T], an initial state S_0 [d_v, d_k] and a
chunk size. Regimes are visible parameters: ``beta_regime`` in "(0,1]", "(0,2)", "unconstrained" (standard normal
times 1.5, so negative and > 2 both occur), gates a in (0, 1] (drawn from [0.05, 1], with exact 1s mixed in).
Keys are unit vectors times a norm in [0.5, 1], as DeltaNet-style models normalise keys.

Error model for float64 comparisons between two forms (``UpdateProblem.budget``): every form is a sequence of
O(T (T + d_k)) additions and multiplications whose intermediate values are at most ``scale`` (the largest entry of
any intermediate state S_t times max(1, ||q_t||_1), or of the outputs); the recurrence propagates an error made at
step t through the later transitions (I - beta_s k_s k_s^T), amplifying it by at most
G = prod_s max(1, |1 - beta_s ||k_s||^2|) (1 when beta ||k||^2 is in [0, 2]); the solve-based forms amplify it by
cond_inf of their unit lower-triangular system. So |form_1 - form_2| <= c (T + d_k) u max(G, cond) scale, with
u = 2^-53 and c = 16 (two forms, each with several roundings per operation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from spec._types import F64

UNIT_ROUNDOFF = 2.0**-53
BETA_REGIMES = ("(0,1]", "(0,2)", "unconstrained")


@dataclass(frozen=True)
class UpdateProblem:
    """One problem for every update rule; ``repro()`` prints how to rebuild it."""

    T: int
    d_k: int
    d_v: int
    chunk: int
    beta_regime: str
    seed: int
    q: F64
    k: F64
    v: F64
    a: F64
    beta: F64
    S0: F64

    @staticmethod
    def sample(T: int, d_k: int, d_v: int, chunk: int, beta_regime: str, seed: int) -> UpdateProblem:
        rng = np.random.default_rng(seed)
        q = rng.standard_normal((T, d_k))
        directions = rng.standard_normal((T, d_k))
        k = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(0.5, 1.0, (T, 1))
        v = rng.standard_normal((T, d_v))
        a = np.where(rng.uniform(size=T) < 0.2, 1.0, rng.uniform(0.05, 1.0, T))
        if beta_regime == "(0,1]":
            beta = np.where(rng.uniform(size=T) < 0.2, 1.0, rng.uniform(1e-3, 1.0, T))
        elif beta_regime == "(0,2)":
            beta = rng.uniform(1e-3, 2.0 - 1e-3, T)
        else:
            beta = 1.5 * rng.standard_normal(T)
        S0 = rng.standard_normal((d_v, d_k))
        return UpdateProblem(T, d_k, d_v, chunk, beta_regime, seed, q, k, v, a, beta, S0)

    def repro(self) -> str:
        return (f"UpdateProblem.sample(T={self.T}, d_k={self.d_k}, d_v={self.d_v}, chunk={self.chunk}, "
                f"beta_regime={self.beta_regime!r}, seed={self.seed})")

    def amplification(self, beta: F64 | None = None) -> float:
        """G = prod_t max(1, |1 - beta_t ||k_t||^2|): how much the recurrence can amplify an earlier error."""
        b = self.beta if beta is None else beta
        factors = np.maximum(1.0, np.abs(1.0 - b * (self.k * self.k).sum(axis=1)))
        return float(np.prod(factors))

    def budget(self, scale: float, *, cond: float = 1.0, beta: F64 | None = None) -> float:
        """The error model of the module docstring: 16 (T + d_k) u max(G, cond) max(1, scale)."""
        return 16 * (self.T + self.d_k) * UNIT_ROUNDOFF * max(self.amplification(beta), cond) * max(1.0, scale)


PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


@st.composite
def update_problems(draw: st.DrawFn, *, max_t: int = 40, beta_regimes: tuple[str, ...] = BETA_REGIMES
                    ) -> UpdateProblem:
    """T in 1..max_t (primes and 1 favoured), a chunk size that often does not divide T, small d_k and d_v."""
    T = draw(st.one_of(st.sampled_from((1, *[p for p in PRIMES if p <= max_t])), st.integers(1, max_t)))
    chunk = draw(st.sampled_from((1, 2, 3, 4, 5, 7, 8, 16, 64)))
    d_k, d_v = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    beta_regime = draw(st.sampled_from(beta_regimes))
    seed = draw(st.integers(0, 2**32 - 1))
    return UpdateProblem.sample(T, d_k, d_v, chunk, beta_regime, seed)
