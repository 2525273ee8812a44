"""Kernels kappa(x, y) as Gram-matrix functions, and their finite feature maps where those exist.

Every function takes X [n, d] and Y [m, d] and returns the Gram matrix G [n, m] with G[i, j] = kappa(x_i, y_j).
A kernel memory stores values under phi(k) and reads kappa(k_i, q) = phi(k_i)^T phi(q) (equations.md section 1);
the kernel choice is what sets the retrieval SNR (section 2) and DeltaFormer's write similarity (section 4).
"""

from __future__ import annotations

import itertools

import numpy as np

from spec import precision
from spec._types import Array

__all__ = [
    "exp_kernel",
    "linear_feature_map",
    "linear_kernel",
    "polynomial_feature_map",
    "polynomial_kernel",
    "relu_kernel",
    "relu_power_kernel",
    "round_kernel",
    "softmax_kernel",
]


def linear_kernel(X: Array, Y: Array) -> Array:
    """KER.1 [paper]: kappa(x, y) = x^T y, the kernel of linear attention. X [n, d], Y [m, d] -> [n, m]."""
    return X @ Y.T


def linear_feature_map(X: Array) -> Array:
    """KER.2 [paper]: phi(x) = x, the finite feature map of KER.1. X [n, d] -> [n, d]."""
    return X.copy()


def exp_kernel(X: Array, Y: Array, tau: float) -> Array:
    """KER.3 [paper]: kappa(x, y) = exp(x^T y / tau), softmax attention's unnormalised kernel. -> [n, m].

    Its feature space is infinite-dimensional (no finite feature map); ``tau`` is the temperature
    (``tau = sqrt(d)`` is attention's usual scaling).
    """
    return precision.exp((X @ Y.T) / tau)


def softmax_kernel(X: Array, Y: Array, tau: float) -> Array:
    """KER.4 [paper]: kappa(x_i, y_j) = exp(x_i^T y_j / tau) / sum_l exp(x_i^T y_l / tau). -> [n, m], rows sum to 1.

    The exp kernel normalised over the stored keys Y, as softmax attention reads memory. The row maximum is
    subtracted before exponentiating (an exact identity that keeps float64 from overflowing).
    """
    scores = (X @ Y.T) / tau
    weights = precision.exp(scores - precision.softmax_shift(scores, axis=1, keepdims=True))
    totals: Array = weights.sum(axis=1, keepdims=True)
    return weights / totals


def relu_kernel(X: Array, Y: Array) -> Array:
    """KER.5 [paper]: kappa(x, y) = max(x^T y, 0), the FFN's ReLU-like kernel (section 1). -> [n, m]."""
    return precision.relu(X @ Y.T)


def relu_power_kernel(X: Array, Y: Array, p: int) -> Array:
    """KER.6 [derived]: kappa(x, y) = max(x^T y, 0)^p for an integer p >= 1 (ReLU^p). -> [n, m]."""
    return precision.relu(X @ Y.T) ** p


def round_kernel(X: Array, Y: Array) -> Array:
    """KER.7 [reconstructed]: kappa(x, y) = round(x^T y), integer-valued, ties to even. -> [n, m].

    Our reading of the paper's "round" write similarity (equations.md section 4); with near-orthogonal codes of
    coherence below 1/2 it snaps k_a^T k_b to exactly 0 or 1 (section 5).
    """
    return precision.nint(X @ Y.T)


def polynomial_kernel(X: Array, Y: Array, p: int) -> Array:
    """KER.8 [literature]: kappa(x, y) = (x^T y)^p, the homogeneous polynomial kernel of degree p. -> [n, m].

    Not one of the paper's kernels: it is here because it has a finite, non-trivial feature map (KER.9), which the
    kernelised-DeltaNet identity (UPD section) needs to be tested in state form beyond the linear kernel.
    """
    return (X @ Y.T) ** p


def polynomial_feature_map(X: Array, p: int) -> Array:
    """KER.9 [literature]: phi(x) = x^{(tensor) p}, so phi(x)^T phi(y) = (x^T y)^p. X [n, d] -> [n, d^p].

    Entry (i_1, ..., i_p) of the tensor power is the product x_{i_1} ... x_{i_p}, in lexicographic order.
    """
    n, d = X.shape
    columns = []
    for index in itertools.product(range(d), repeat=p):
        column = X[:, index[0]].copy()
        for i in index[1:]:
            column = column * X[:, i]
        columns.append(column)
    return np.stack(columns, axis=1).reshape(n, d**p)
