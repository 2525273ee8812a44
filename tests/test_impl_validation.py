"""Every documented input error of the public impl ops: the exception type and a message naming the argument."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import impl


def _qkvb(B: int = 1, T: int = 5, H: int = 2, K: int = 3, V: int = 3,
          dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"q": torch.randn(B, T, H, K, generator=gen).to(dtype),
            "k": torch.randn(B, T, H, K, generator=gen).to(dtype),
            "v": torch.randn(B, T, H, V, generator=gen).to(dtype),
            "beta": torch.rand(B, T, H, generator=gen).to(dtype)}


def _call(op: str, x: dict[str, Any], **kwargs: Any) -> object:
    fns: dict[str, Callable[..., object]] = {
        "deltaformer_attn": lambda: impl.deltaformer_attn(x["q"], x["k"], x["v"], x["beta"], **kwargs),
        "deltaformer_u": lambda: impl.deltaformer_u(x["q"], x["k"], x["v"], x["beta"], **kwargs),
        "delta_rule": lambda: impl.delta_rule(x["q"], x["k"], x["v"], x["beta"], **kwargs),
        "linear_attn": lambda: impl.linear_attn(x["q"], x["k"], x["v"], **kwargs),
        "softmax_attn": lambda: impl.softmax_attn(x["q"], x["k"], x["v"], **kwargs),
    }
    return fns[op]()


ALL_OPS = ["deltaformer_attn", "deltaformer_u", "delta_rule", "linear_attn", "softmax_attn"]
FIRST = {"deltaformer_u": "w"}


@pytest.mark.parametrize("op", ALL_OPS)
def test_valid_inputs_run(op: str) -> None:
    _call(op, _qkvb())


@pytest.mark.parametrize("op", ALL_OPS)
def test_wrong_rank_names_argument(op: str) -> None:
    x = _qkvb()
    x["k"] = x["k"][0]
    with pytest.raises(ValueError, match=r"k must be a 4-D tensor \[B, T, H, K\], got 3-D"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_shape_mismatch_names_argument(op: str) -> None:
    x = _qkvb()
    x["v"] = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match=r"v must have shape \[B, T, H, V\] = \(1, 5, 2, \*\)"):
        _call(op, x)


@pytest.mark.parametrize("op", ["deltaformer_attn", "delta_rule"])
def test_beta_shape_names_argument(op: str) -> None:
    x = _qkvb()
    x["beta"] = torch.rand(1, 5, 3)
    with pytest.raises(ValueError, match=r"beta must have shape \[B, T, H\] = \(1, 5, 2\)"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_dtype_mismatch_is_type_error(op: str) -> None:
    x = _qkvb()
    x["v"] = x["v"].double()
    with pytest.raises(TypeError, match=r"v must have the dtype of .* \(torch.float32\), got torch.float64"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_integer_dtype_is_type_error(op: str) -> None:
    x = _qkvb()
    x["k"] = x["k"].to(torch.int64)
    with pytest.raises(TypeError, match="k must have a floating dtype"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_not_a_tensor_is_type_error(op: str) -> None:
    x = _qkvb()
    x["k"] = x["k"].numpy()
    with pytest.raises(TypeError, match=r"k must be a torch\.Tensor"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_device_mismatch_names_argument(op: str) -> None:
    x = _qkvb()
    x["v"] = x["v"].to("meta")
    with pytest.raises(ValueError, match=r"device mismatch|v must be on the device"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_non_contiguous_views_give_the_contiguous_result(op: str) -> None:
    """Views users pass every day: q, k, v as ``chunk`` slices of one fused projection, a transposed k, an expanded
    beta. Same outputs as contiguous copies (the same arithmetic on the same values, so exactly) and gradients that
    reach the fused tensor. Before: refused with "call .contiguous()"."""
    gen = torch.Generator().manual_seed(3)
    fused = torch.randn(1, 5, 2, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    q, k_fused, v = fused.chunk(3, dim=-1)
    k = k_fused.detach().transpose(2, 3).contiguous().transpose(2, 3)  # non-contiguous, strides of [.., 3, 2]
    beta = torch.rand(1, 1, 2, generator=gen, dtype=torch.float64).expand(1, 5, 2)
    views = {"q": q, "k": k, "v": v, "beta": beta}
    assert not any(t.is_contiguous() for t in views.values())
    out = _call(op, views)
    copies = {name: t.detach().contiguous() for name, t in views.items()}
    want = _call(op, copies)
    got, expected = (r[0] if isinstance(r, tuple) else r for r in (out, want))
    assert isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor)
    assert torch.equal(got.detach(), expected)
    got.sum().backward()
    assert fused.grad is not None and bool(fused.grad.abs().sum() > 0)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_names_argument(op: str, bad: float) -> None:
    x = _qkvb()
    x["v"][0, 2, 1, 0] = bad
    with pytest.raises(ValueError, match="v contains NaN or Inf"):
        _call(op, x)


@pytest.mark.parametrize("op", ALL_OPS)
def test_empty_sequence_is_rejected(op: str) -> None:
    x = _qkvb(T=0)
    with pytest.raises(ValueError, match=f"{FIRST.get(op, 'q')} is empty"):
        _call(op, x)


@pytest.mark.parametrize("op", ["deltaformer_attn", "deltaformer_u"])
def test_unknown_kernel_lists_options(op: str) -> None:
    with pytest.raises(ValueError, match=r"unknown kernel 'relu'; expected one of 'softmax', 'exp', 'linear', 'round'"):
        _call(op, _qkvb(), kernel="relu")


def test_unknown_write_lists_options() -> None:
    with pytest.raises(ValueError, match=r"unknown write 'v'; expected one of 'k', 'q'"):
        _call("deltaformer_attn", _qkvb(), write="v")


@pytest.mark.parametrize("op", ALL_OPS)
def test_unknown_backend_lists_options(op: str) -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; expected one of 'auto', 'torch', 'triton'"):
        _call(op, _qkvb(), backend="cuda")


@pytest.mark.parametrize("op", ALL_OPS)
def test_triton_without_cuda_or_interpreter_is_runtime_error(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit backend request never falls back silently to torch."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="backend='triton' needs CUDA tensors or TRITON_INTERPRET=1"):
        _call(op, _qkvb(), backend="triton")


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize(("bad", "error", "message"), [
    (0, ValueError, "chunk_size must be >= 1, got 0"),
    (2.0, TypeError, r"chunk_size must be None \(the backend.s choice\) or an int >= 1, got float"),
])
def test_bad_chunk_size(op: str, bad: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _call(op, _qkvb(), chunk_size=bad)


@pytest.mark.parametrize("op", ALL_OPS)
def test_bad_scale(op: str) -> None:
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        _call(op, _qkvb(), scale=math.nan)
    with pytest.raises(TypeError, match="scale must be None or a real number, got str"):
        _call(op, _qkvb(), scale="0.5")


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize(("cu", "error", "message"), [
    ([0, 2, 2, 5], ValueError, "cu_seqlens must be strictly increasing"),
    ([1, 3, 5], ValueError, "cu_seqlens must start at 0, got 1"),
    ([0, 3, 4], ValueError, r"cu_seqlens must end at T = 5 \(the packed length\), got 4"),
    ([[0, 5]], ValueError, r"cu_seqlens must be a 1-D tensor \[N \+ 1\]"),
])
def test_bad_cu_seqlens(op: str, cu: list[int], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _call(op, _qkvb(), cu_seqlens=torch.tensor(cu))


@pytest.mark.parametrize("op", ALL_OPS)
def test_cu_seqlens_dtype_and_batch(op: str) -> None:
    with pytest.raises(TypeError, match=r"cu_seqlens must have dtype int32 or int64, got torch\.float32"):
        _call(op, _qkvb(), cu_seqlens=torch.tensor([0.0, 5.0]))
    with pytest.raises(ValueError, match="with cu_seqlens the batch size B must be 1"):
        _call(op, _qkvb(B=2), cu_seqlens=torch.tensor([0, 5]))


@pytest.mark.parametrize("op", ["delta_rule", "linear_attn"])
def test_bad_initial_state(op: str) -> None:
    with pytest.raises(ValueError, match=r"initial_state must have shape \[N, H, K, V\] = \(1, 2, 3, 3\)"):
        _call(op, _qkvb(), initial_state=torch.zeros(1, 2, 3, 4))
    with pytest.raises(TypeError, match="initial_state must have the dtype of q"):
        _call(op, _qkvb(), initial_state=torch.zeros(1, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="output_final_state must be a bool, got int"):
        _call(op, _qkvb(), output_final_state=1)


def test_delta_rule_requires_beta() -> None:
    x = _qkvb()
    x["beta"] = None
    with pytest.raises(TypeError, match=r"beta must be a torch.Tensor \[B, T, H\], got NoneType"):
        _call("delta_rule", x)


def test_decode_step_errors() -> None:
    q = torch.randn(1, 2, 3)
    empty = torch.zeros(1, 0, 2, 3)
    with pytest.raises(ValueError, match=r"k_t must have shape \[B, H, K\]"):
        impl.deltaformer_decode_step(empty, empty, q, torch.randn(1, 2, 4), q)
    with pytest.raises(ValueError, match=r"cache_u must have shape \[B, t, H, V\]"):
        impl.deltaformer_decode_step(torch.zeros(1, 4, 2, 3), torch.zeros(1, 3, 2, 3), q, q, q)
    with pytest.raises(TypeError, match=r"q_t must be a torch\.Tensor"):
        impl.deltaformer_decode_step(empty, empty, [1.0], q, q)
    with pytest.raises(ValueError, match="unknown kernel"):
        impl.deltaformer_decode_step(empty, empty, q, q, q, kernel="relu")


def test_decode_step_and_initial_state_take_views() -> None:
    """Row views x[:, t] (non-contiguous for B > 1) in the decode step, a transposed initial state."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 2, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    empty = torch.zeros(2, 0, 2, 4, dtype=torch.float64)
    assert not q[:, 0].is_contiguous()
    step = impl.deltaformer_decode_step(empty, empty, q[:, 0], k[:, 0], v[:, 0])
    step = impl.deltaformer_decode_step(step.cache_k, step.cache_u, q[:, 1], k[:, 1], v[:, 1])
    full = impl.deltaformer_attn(q[:, :2].contiguous(), k[:, :2].contiguous(), v[:, :2].contiguous())
    torch.testing.assert_close(step.o, full[:, 1], rtol=1e-12, atol=1e-12)
    state = torch.randn(2, 2, 4, 4, generator=gen, dtype=torch.float64).transpose(2, 3)
    o, _ = impl.linear_attn(q, k, v, initial_state=state)
    torch.testing.assert_close(o, impl.linear_attn(q, k, v, initial_state=state.contiguous()).o, rtol=0, atol=0)


@pytest.mark.parametrize("op", ALL_OPS)
def test_numpy_scalars_are_taken_for_scale_and_chunk_size(op: str) -> None:
    """As the spec takes them: np.float32 / np.int64 give the result of the Python float / int. Before: TypeError."""
    want = _call(op, _qkvb(), scale=0.5, chunk_size=2)
    got = _call(op, _qkvb(), scale=np.float32(0.5), chunk_size=np.int64(2))
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                    strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    with pytest.raises(TypeError, match=r"chunk_size must be None .* or an int >= 1, got bool"):
        _call(op, _qkvb(), chunk_size=np.bool_(True))


def test_layer_options_are_validated() -> None:
    """head_dim was not validated (0 built empty projections, 2.5 failed inside torch); decode_step(x, None) raised
    AttributeError."""
    with pytest.raises(ValueError, match="head_dim must be >= 1, got 0"):
        impl.DeltaFormerAttention(8, 2, head_dim=0)
    with pytest.raises(TypeError, match=r"head_dim must be None \(hidden_size // num_heads\) or an int >= 1, "
                                        r"got float"):
        impl.DeltaFormerAttention(8, 2, head_dim=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_heads must be an int >= 1, got str"):
        impl.DeltaFormerAttention(8, "2")  # type: ignore[arg-type]
    layer = impl.DeltaFormerAttention(8, 2)
    with pytest.raises(TypeError, match=r"cache must be a DeltaFormerCache \(start from layer.empty_cache\(batch\)\), "
                                        r"got NoneType"):
        layer.decode_step(torch.randn(1, 8), None)  # type: ignore[arg-type]
    assert impl.DeltaFormerAttention(8, 2, head_dim=np.int64(3)).head_dim == 3  # type: ignore[arg-type]
