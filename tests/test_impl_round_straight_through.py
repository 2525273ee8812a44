"""The round write kernel's straight-through estimator (``straight_through=True``) against plain autograd.

The reference below is written independently of impl's chunked backward: the whole [T, T] score matrix, the
straight-through round as ``x + (round(x) - x).detach()`` (forward round(x), derivative 1), a dense unit
lower-triangular solve and a dense causal softmax read-out, differentiated by torch's autograd. The same reference
with ``round(x).detach()`` (derivative 0) is the default behaviour, so the two settings are told apart.
"""

from __future__ import annotations

import pytest
import torch

import impl

B, T, H, K, V, CHUNK = 1, 11, 2, 3, 4, 4  # chunk 4 does not divide T = 11: three chunks, a ragged last one
KEY_SIZE = 0.8  # keys 0.8 N(0, I_3): write scores k_t . k_j mostly round to 0, +-1, +-2
EPS = torch.finfo(torch.float64).eps


def _inputs(seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = KEY_SIZE * torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    beta = 0.5 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    cot = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    return q, k, v, beta, cot


def _write_scores(k: torch.Tensor) -> torch.Tensor:
    """[B, H, T, T] k_t . k_j (the round kernel's default write scale is 1)."""
    kh = k.transpose(1, 2)
    return kh @ kh.transpose(-1, -2)


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *,
               straight_through: bool) -> torch.Tensor:
    """o = causal_softmax(Q K^T / sqrt(K)) U with (I + diag(beta) P) U = V, P = strict_lower(round(K K^T))."""
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, *]
    scores = _write_scores(k)
    rounded = scores + (torch.round(scores) - scores).detach() if straight_through else torch.round(scores).detach()
    M = torch.eye(T, dtype=torch.float64) + beta.transpose(1, 2)[..., None] * torch.tril(rounded, -1)
    U = torch.linalg.solve_triangular(M, vh, upper=False, unitriangular=True)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    read = (qh @ kh.transpose(-1, -2) / K ** 0.5).masked_fill(~causal, -torch.inf).softmax(-1)
    return (read @ U).transpose(1, 2)


@pytest.mark.parametrize("create_graph", [False, True])  # the chunked backward, or the dense double-backward form
@pytest.mark.parametrize("straight_through", [True, False])
def test_round_gradients_match_dense_autograd(straight_through: bool, create_graph: bool) -> None:
    """Outputs and all four gradients of impl's torch backend equal the dense reference's.

    Error model: every quantity is a sum, product or solve of at most T = 11 terms in fp64; with beta < 0.5 and
    |round(k_t . k_j)| <= 3 here (asserted) the triangular system's inverse has entries below 2.5^11 ~ 2e4 in the
    worst case, so the reference and impl differ by at most ~ T * 2e4 eps relative to the largest entry; 1e6 eps
    covers it and still fails any missing or extra gradient term, which is O(1) relative. The scores' margin to
    the rounding boundaries (half-integers) is asserted, so the chunked and dense products round the same way.
    """
    q, k, v, beta, cot = _inputs(seed=3)
    scores = _write_scores(k)
    assert float((scores - torch.floor(scores) - 0.5).abs().min()) > 1e-6
    assert float(torch.round(scores).tril(-1).abs().max()) <= 3
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v, beta)]
    want = _reference(*leaves, straight_through=straight_through)
    want_grads = torch.autograd.grad(want, leaves, cot)
    got = impl.deltaformer_attn(*leaves, kernel="round", chunk_size=CHUNK, backend="torch",
                                straight_through=straight_through)
    got_grads = torch.autograd.grad(got, leaves, cot, create_graph=create_graph)
    tol = 1e6 * EPS
    assert float((got - want).detach().abs().max()) <= tol * float(want.detach().abs().max())
    for name, g, w in zip(("q", "k", "v", "beta"), got_grads, want_grads, strict=True):
        assert float((g - w).detach().abs().max()) <= tol * float(w.abs().max()), name


def test_straight_through_leaves_the_forward_bit_identical() -> None:
    """The estimator is a backward-only change: the forward of the two settings agrees exactly (a version that
    swapped the rounded scores for the raw ones in the forward would differ by O(1))."""
    q, k, v, beta, _ = _inputs(seed=4)
    plain = impl.deltaformer_attn(q, k, v, beta, kernel="round", chunk_size=CHUNK)
    ste = impl.deltaformer_attn(q, k, v, beta, kernel="round", chunk_size=CHUNK, straight_through=True)
    torch.testing.assert_close(plain, ste, rtol=0, atol=0)


def test_straight_through_is_refused_off_the_round_kernel_and_on_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, beta, _ = _inputs(seed=5)
    with pytest.raises(ValueError, match=r"straight_through=True applies to kernel='round' only, got kernel='linear'"):
        impl.deltaformer_attn(q, k, v, beta, kernel="linear", straight_through=True)
    with pytest.raises(TypeError, match=r"straight_through must be a bool, got int"):
        impl.deltaformer_u(k, k, v, beta, kernel="round", straight_through=1)  # type: ignore[arg-type]
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # triton then resolves on CPU; the option must still be refused
    with pytest.raises(RuntimeError, match=r"implemented by the torch backend only, got backend='triton'"):
        impl.deltaformer_u(k, k, v, beta, kernel="round", backend="triton", straight_through=True)
