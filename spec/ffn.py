"""The feed-forward network as long-term associative memory (equations.md section 1).

FFN(x) = W2 sigma(W1 x) with W1 [d_ff, d_model], W2 [d_out, d_ff] and sigma = ReLU^p (p = 1 is ReLU). Read as a
memory of d_ff pairs: key k_m = row m of W1, value v_m = column m of W2, and the read is the kernel memory AM.4
with the dot-product kernel kappa(k, x) = sigma(k^T x):

    FFN(x) = sum_{m <= d_ff} v_m sigma(k_m^T x)            (FFN.3, [derived])

``ffn`` computes the matrix form, ``ffn_as_memory`` the memory form through ``spec.memory.kernel_memory_read`` and
``spec.kernels``; they share no code, and tests/test_spec_ffn.py checks they agree. No biases: a bias b1 is a
constant extra input coordinate and b2 a value read with weight 1, neither changes the memory reading.
Inputs: one token x [d_model] -> [d_out], or a stack X [T, d_model] -> [T, d_out]. float64 or mpmath.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from spec import _validate, kernels, memory, precision
from spec._types import Array

__all__ = ["ffn", "ffn_as_memory", "ffn_keys_values"]


def _weights(W1: Any, W2: Any) -> tuple[Array, Array]:
    W1 = _validate.matrix("W1", W1)
    W2 = _validate.matrix("W2", W2, cols=W1.shape[0], cols_of="W1's rows, d_ff")
    W1, W2 = _validate.unify(W1, W2)
    return W1, W2


def _tokens(x: Any, d_model: int) -> Array:
    if np.ndim(x) == 1:
        return _validate.vector("x", x, length=d_model, length_of="W1's columns, d_model")
    return _validate.matrix("x", x, cols=d_model, cols_of="W1's columns, d_model")


def _power(p: Any) -> int:
    return _validate.positive_int("p", p)


def ffn(x: Any, W1: Any, W2: Any, p: Any = 1) -> Array:
    """FFN.1 [literature]: FFN(x) = W2 sigma(W1 x), sigma(z) = max(z, 0)^p (p = 1: ReLU), no biases.

    x [d_model] -> [d_out] or X [T, d_model] -> [T, d_out]; W1 [d_ff, d_model], W2 [d_out, d_ff]; p >= 1 an int.
    The standard two-layer FFN of the Transformer, in matrix form.
    """
    W1, W2 = _weights(W1, W2)
    p = _power(p)
    x = _tokens(x, W1.shape[1])
    W1, W2, x = _validate.unify(W1, W2, x)
    hidden = precision.relu(x @ W1.T) ** p
    out: Array = hidden @ W2.T
    return out


def ffn_keys_values(W1: Any, W2: Any) -> tuple[Array, Array]:
    """FFN.2 [derived]: k_m = W1[m, :] (rows of W1 are keys), v_m = W2[:, m] (columns of W2 are values).

    W1 [d_ff, d_model], W2 [d_out, d_ff] -> (K [d_ff, d_model], V [d_ff, d_out]): d_ff stored pairs.
    """
    W1, W2 = _weights(W1, W2)
    return W1.copy(), W2.T.copy()


def ffn_as_memory(x: Any, W1: Any, W2: Any, p: Any = 1) -> Array:
    """FFN.3 [derived]: FFN(x) = sum_{m <= d_ff} v_m sigma(k_m^T x), a kernel-memory read with kappa = ReLU^p.

    The read AM.4 of the memory (K, V) = ffn_keys_values(W1, W2) with kernel ``spec.kernels.relu_kernel``
    (p = 1) or ``relu_power_kernel`` (p > 1). x [d_model] -> [d_out] or X [T, d_model] -> [T, d_out].
    Equals ``ffn`` (the matrix form): tests/test_spec_ffn.py.
    """
    K, V = ffn_keys_values(W1, W2)
    p = _power(p)
    x = _tokens(x, K.shape[1])
    kernel = kernels.relu_kernel if p == 1 else functools.partial(kernels.relu_power_kernel, p=p)
    return memory.kernel_memory_read(K, V, x, kernel)
