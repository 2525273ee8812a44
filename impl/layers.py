"""``DeltaFormerAttention``: a multi-head DeltaFormer attention layer built on ``impl.deltaformer_attn``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

from impl import _validate, _write_kernels
from impl.deltaformer import deltaformer_attn, deltaformer_decode_step

__all__ = ["BETA_MODES", "DeltaFormerAttention", "DeltaFormerCache"]

BETA_MODES: tuple[str, ...] = ("unconstrained", "sigmoid2", "ones")


@dataclass
class DeltaFormerCache:
    """Decoding cache: keys and *written values* u (not v), [B, t, H, K] and [B, t, H, V]."""

    k: Tensor
    u: Tensor


class DeltaFormerAttention(nn.Module):
    """Multi-head DeltaFormer attention: x [B, T, hidden] -> y [B, T, hidden].

    q, k, v = x W_q, x W_k, x W_v split into ``num_heads`` heads of ``head_dim``; beta = x W_beta per head, mapped
    by ``beta_mode``: "unconstrained" uses it as is (the public DeltaFormer code), "sigmoid2" uses 2 sigmoid(.)
    in (0, 2) (the range where DeltaNet's step I - beta k k^T is a contraction for unit keys, equations.md
    section 3; it also bounds the u growth of equations.md section 4 stability), "ones" fixes beta = 1.
    ``key_norm=True`` L2-normalises every head's key and multiplies it by a learnable per-head gain ``k_gain``
    (initialised to 1): the unnormalised exp, linear and round write kernels otherwise see scores that grow with
    the key norm and can overflow from the first training step. ``straight_through=True`` (kernel "round" only)
    trains the rounded write scores with a straight-through estimator (see ``impl.deltaformer_u``).
    Then o = impl.deltaformer_attn(q, k, v, beta, write=..., kernel=...) and y = o W_o.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, write: str = "k",
                 kernel: str = "softmax", beta_mode: str = "sigmoid2", scale: float | None = None,
                 chunk_size: int | None = None, backend: str = "auto", bias: bool = False, key_norm: bool = False,
                 straight_through: bool = False, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        hidden_size = _validate.check_positive_int("hidden_size", hidden_size)
        num_heads = _validate.check_positive_int("num_heads", num_heads)
        if head_dim is None:
            if hidden_size % num_heads != 0:
                raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}) when "
                                 f"head_dim is not given")
            head_dim = hidden_size // num_heads
        head_dim = _validate.check_positive_int("head_dim", head_dim, none_means="hidden_size // num_heads")
        self.write = _validate.check_choice("write", write, _write_kernels.WRITES)
        self.kernel = _validate.check_choice("kernel", kernel, _write_kernels.NAMES)
        self.beta_mode = _validate.check_choice("beta_mode", beta_mode, BETA_MODES)
        self.scale = _validate.check_scale(scale)
        self.chunk_size = _validate.check_chunk_size(chunk_size)
        self.straight_through = _validate.check_flag("straight_through", straight_through)
        self.backend = backend
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(hidden_size, inner, bias=bias, **factory)
        self.k_proj = nn.Linear(hidden_size, inner, bias=bias, **factory)
        self.v_proj = nn.Linear(hidden_size, inner, bias=bias, **factory)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=True, **factory)
        self.o_proj = nn.Linear(inner, hidden_size, bias=bias, **factory)
        self.key_norm = bool(key_norm)
        self.k_gain = nn.Parameter(torch.ones(num_heads, 1, device=device, dtype=dtype)) if self.key_norm else None

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        shape = (*x.shape[:-1], self.num_heads, self.head_dim)
        q = self.q_proj(x).reshape(shape)
        k = self.k_proj(x).reshape(shape)
        if self.k_gain is not None:
            k = self.k_gain * functional.normalize(k, dim=-1)
        v = self.v_proj(x).reshape(shape)
        raw = self.b_proj(x)
        if self.beta_mode == "sigmoid2":
            beta = 2.0 * torch.sigmoid(raw)
        elif self.beta_mode == "ones":
            beta = torch.ones_like(raw)
        else:
            beta = raw
        return q, k, v, beta

    def forward(self, x: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """x [B, T, hidden] -> y [B, T, hidden]; ``cu_seqlens`` packs sequences along T (B = 1)."""
        if not isinstance(x, Tensor) or x.ndim != 3:
            raise ValueError(f"x must be a 3-D tensor [B, T, hidden], got {getattr(x, 'shape', type(x).__name__)}")
        q, k, v, beta = self._heads(x)
        o = deltaformer_attn(q, k, v, beta, write=self.write,
                             kernel=self.kernel, scale=self.scale, chunk_size=self.chunk_size, cu_seqlens=cu_seqlens,
                             backend=self.backend, straight_through=self.straight_through)
        out: Tensor = self.o_proj(o.reshape(*x.shape[:-1], -1))
        return out

    def empty_cache(self, batch: int, *, device: torch.device | None = None,
                    dtype: torch.dtype | None = None) -> DeltaFormerCache:
        """An empty decoding cache for ``batch`` sequences."""
        dtype = self.q_proj.weight.dtype if dtype is None else dtype
        device = self.q_proj.weight.device if device is None else device
        shape = (batch, 0, self.num_heads, self.head_dim)
        return DeltaFormerCache(torch.zeros(shape, dtype=dtype, device=device),
                                torch.zeros(shape, dtype=dtype, device=device))

    def decode_step(self, x_t: Tensor, cache: DeltaFormerCache) -> tuple[Tensor, DeltaFormerCache]:
        """One token x_t [B, hidden] -> (y_t [B, hidden], grown cache); equals ``forward`` row by row."""
        if not isinstance(x_t, Tensor) or x_t.ndim != 2:
            raise ValueError(f"x_t must be a 2-D tensor [B, hidden], got {getattr(x_t, 'shape', type(x_t).__name__)}")
        if not isinstance(cache, DeltaFormerCache):
            raise TypeError(f"cache must be a DeltaFormerCache (start from layer.empty_cache(batch)), got "
                            f"{type(cache).__name__}")
        q, k, v, beta = self._heads(x_t)
        step = deltaformer_decode_step(cache.k, cache.u, q.contiguous(), k.contiguous(), v.contiguous(),
                                       beta.contiguous(), write=self.write, kernel=self.kernel, scale=self.scale)
        y: Tensor = self.o_proj(step.o.reshape(x_t.shape[0], -1))
        return y, DeltaFormerCache(step.cache_k, step.cache_u)
