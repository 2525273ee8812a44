"""impl: the performance package (PyTorch path that runs anywhere, Triton kernels for GPUs).

Public ops in FLA's layout ([B, T, H, D], beta [B, T, H], state [N, H, K, V]); each names the spec function it
implements. See ``impl/README.md`` for the backend contract, precision policy and state orientation.
"""

from impl.delta_rule import RecurrentOutput, delta_rule
from impl.deltaformer import DecodeOutput, deltaformer_attn, deltaformer_decode_step, deltaformer_u
from impl.layers import DeltaFormerAttention, DeltaFormerCache
from impl.linear_attn import linear_attn
from impl.softmax_attn import softmax_attn

__all__ = [
    "DecodeOutput",
    "DeltaFormerAttention",
    "DeltaFormerCache",
    "RecurrentOutput",
    "delta_rule",
    "deltaformer_attn",
    "deltaformer_decode_step",
    "deltaformer_u",
    "linear_attn",
    "softmax_attn",
]
