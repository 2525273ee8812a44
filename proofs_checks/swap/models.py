"""Tiny sequence models for the swap task: one pre-norm residual stack, three kinds of token mixer.

Every model: token (a_t, b_t, p_t) -> E_a[a_t] + E_b[b_t] + E_q[p_t] -> ``layers`` blocks
x <- x + Mixer(LN(x)); x <- x + MLP(LN(x)) (MLP: width -> 4 width -> width, GELU) -> LN -> linear head to n logits.

No positional embeddings, for every model. Causal masking already tells a softmax Transformer the order (the causal
prefix sums encode position; "NoPE", Kazemnejad et al. 2023), the delta-rule models are recurrent, and learned
position embeddings would leave the positions beyond the training length untrained, which would turn the
length-generalisation test into a test of untrained embeddings rather than of the mixer.

Mixers (every sequence op is ``impl``'s; this module only holds projections):
- ``transformer``: causal softmax attention, ``impl.softmax_attn``.
- ``deltanet``: ``impl.delta_rule`` with L2-normalised queries and keys and beta = sigmoid(W_b x) in (0, 1), as in
  DeltaNet (Schlag et al. 2021; Yang et al. 2024), without its short convolution. With unit keys the swap
  reflection I - 2 k k^T needs beta = 2 (``spec.swap_tracking.deltanet_swap_tracker``), outside (0, 1).
- ``deltaformer-<kernel>``: the impl layer ``impl.DeltaFormerAttention`` (write vector k, the paper's k-k
  similarity; the impl's default scales: 1/sqrt(d) for softmax / exp, 1 for linear / round), write kernel
  softmax / exp / linear / round, beta_mode "sigmoid2" (beta = 2 sigmoid(W_b x) in (0, 2), the layer's default;
  "unconstrained", the public code's choice, with ``--deltaformer-beta``). One change: its key projection is
  followed by a per-head L2 normalisation times a learnable gain g (init 1), so every write score starts bounded
  (|g^2 cos| <= 1 for linear / round). With raw projected keys (|k|^2 ~ 20 at init) and unconstrained beta the
  linear, exp and round kernels overflowed u in the very first forward pass (the unit-lower-triangular solve
  amplifies like prod (1 + |beta P|)), which would measure our initialisation rather than the kernels. Queries
  stay raw.
  The round kernel's derivative is 0 almost everywhere; the impl's backward passes no gradient through the
  rounded write scores, so the key projection and gain learn only through the softmax read-out, while v, beta,
  q and the read-out learn as usual. ``deltaformer-round-ste`` is the same model trained with a straight-through
  estimator (``impl``'s ``straight_through=True``: round' taken as 1, so the keys also learn through the write
  scores; [derived]: our choice, the paper's treatment of the round kernel's gradient is not known to us).

``head_dim`` (default width / heads) sets the head size d_k = d_v of every mixer; the residual width stays
``width``. The beyond-d_k preset uses it to give every model a small key dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

import impl

__all__ = ["DEFAULT_MODELS", "DELTAFORMER_KERNELS", "MODEL_NAMES", "DivergedError", "ModelConfig", "SwapModel",
           "model_kernel"]

DELTAFORMER_KERNELS = ("softmax", "exp", "linear", "round", "round-ste")
"""DeltaFormer write kernels of the sweep; "round-ste" is the round kernel trained with a straight-through
estimator."""
DELTANET_BETAS = ("sigmoid", "sigmoid2")
MODEL_NAMES = ("transformer", "deltanet", *(f"deltaformer-{kernel}" for kernel in DELTAFORMER_KERNELS))
"""The model names of the sweep, in table order."""
DEFAULT_MODELS = MODEL_NAMES[:-1]
"""The models of the default sweep (issue 6's six; the straight-through round kernel is opt-in)."""


def model_kernel(name: str) -> str | None:
    """The DeltaFormer write kernel of a model name ("round-ste" for the straight-through round), None otherwise."""
    return name.removeprefix("deltaformer-") if name.startswith("deltaformer-") else None


class DivergedError(RuntimeError):
    """A hidden state became NaN or Inf (raised before the next ``impl`` op would reject it)."""


@dataclass(frozen=True)
class ModelConfig:
    """Size of the models: residual width, number of blocks, heads (head size width / heads); the beta of the
    DeltaFormer layers (``impl.DeltaFormerAttention``'s ``beta_mode``) and of DeltaNet ("sigmoid": (0, 1), the
    DeltaNet default; "sigmoid2": 2 sigmoid in (0, 2), which reaches the swap reflection, an ablation)."""

    width: int = 64
    layers: int = 1
    heads: int = 1
    deltaformer_beta: str = "sigmoid2"
    deltanet_beta: str = "sigmoid"
    head_dim: int | None = None

    def __post_init__(self) -> None:
        if self.width < 1 or self.layers < 1 or self.heads < 1:
            raise ValueError(f"width, layers, heads must be positive, got {self}")
        if self.head_dim is None and self.width % self.heads:
            raise ValueError(f"heads must divide width when head_dim is not given, got {self}")
        if self.head_dim is not None and self.head_dim < 1:
            raise ValueError(f"head_dim must be positive, got {self.head_dim}")
        if self.deltaformer_beta not in impl.layers.BETA_MODES:
            raise ValueError(f"deltaformer_beta must be one of {impl.layers.BETA_MODES}, got {self.deltaformer_beta!r}")
        if self.deltanet_beta not in DELTANET_BETAS:
            raise ValueError(f"deltanet_beta must be one of {DELTANET_BETAS}, got {self.deltanet_beta!r}")

    @property
    def d_k(self) -> int:
        """The head size (keys, queries and values)."""
        return self.head_dim if self.head_dim is not None else self.width // self.heads


class _Mixer(nn.Module):
    """Projections to heads around one sequence op; subclasses implement ``mix`` on [B, T, H, D] tensors."""

    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        q, k, v = (t.contiguous() for t in self.qkv(x).view(B, T, 3, self.heads, self.head_dim).unbind(2))
        o = self.mix(x, q, k, v)
        out: Tensor = self.out(o.reshape(B, T, self.heads * self.head_dim))
        return out

    def mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The sequence op (softmax attention, delta rule, ...); every concrete mixer overrides it."""
        raise NotImplementedError(f"{type(self).__name__} must implement mix()")


class _SoftmaxMixer(_Mixer):
    def mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        o: Tensor = impl.softmax_attn(q, k, v)
        return o


class _DeltaNetMixer(_Mixer):
    def __init__(self, width: int, heads: int, head_dim: int, beta_range: float) -> None:
        super().__init__(width, heads, head_dim)
        self.beta = nn.Linear(width, heads)
        self.beta_range = beta_range

    def mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        beta = self.beta_range * torch.sigmoid(self.beta(x))
        o, _ = impl.delta_rule(functional.normalize(q, dim=-1), functional.normalize(k, dim=-1), v, beta)
        result: Tensor = o
        return result


def _deltaformer_layer(config: ModelConfig, kernel: str) -> nn.Module:
    """``impl.DeltaFormerAttention`` (write vector k) with unit keys times a learnable per-head gain; "round-ste"
    is the round kernel with the straight-through backward (torch backend, the only one that has it)."""
    ste = kernel == "round-ste"
    return impl.DeltaFormerAttention(config.width, config.heads, config.d_k, write="k",
                                     kernel="round" if ste else kernel, beta_mode=config.deltaformer_beta,
                                     key_norm=True, straight_through=ste, backend="torch" if ste else "auto")


def _mixer(name: str, config: ModelConfig) -> nn.Module:
    width, heads, head_dim = config.width, config.heads, config.d_k
    if name == "transformer":
        return _SoftmaxMixer(width, heads, head_dim)
    if name == "deltanet":
        return _DeltaNetMixer(width, heads, head_dim, beta_range=2.0 if config.deltanet_beta == "sigmoid2" else 1.0)
    kernel = model_kernel(name)
    if kernel is not None and kernel in DELTAFORMER_KERNELS:
        return _deltaformer_layer(config, kernel)
    raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}")


class _Block(nn.Module):
    def __init__(self, name: str, config: ModelConfig) -> None:
        super().__init__()
        width = config.width
        self.norm1 = nn.LayerNorm(width)
        self.mixer = _mixer(name, config)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm1(x))
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class SwapModel(nn.Module):
    """Logits [B, T, n] over the object in the queried box after each swap, from (a, b, query) [B, T] int64."""

    def __init__(self, name: str, n: int, config: ModelConfig) -> None:
        super().__init__()
        self.name = name
        self.n = n
        width = config.width
        self.embed_a = nn.Embedding(n, width)
        self.embed_b = nn.Embedding(n, width)
        self.embed_query = nn.Embedding(n, width)
        self.blocks = nn.ModuleList(_Block(name, config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n)

    def forward(self, a: Tensor, b: Tensor, query: Tensor) -> Tensor:
        x = self.embed_a(a) + self.embed_b(b) + self.embed_query(query)
        for block in self.blocks:
            x = block(x)
            if not bool(torch.isfinite(x).all()):
                raise DivergedError(f"{self.name}: non-finite hidden state")
        logits: Tensor = self.head(self.norm(x))
        return logits
