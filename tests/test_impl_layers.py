"""impl.DeltaFormerAttention: composition of projections and deltaformer_attn, beta modes, decoding = forward."""

from __future__ import annotations

import pytest
import torch

import impl


@pytest.mark.parametrize("beta_mode", ["unconstrained", "sigmoid2", "ones"])
def test_forward_is_projections_around_deltaformer_attn(beta_mode: str) -> None:
    torch.manual_seed(0)
    layer = impl.DeltaFormerAttention(12, 3, write="q", kernel="softmax", beta_mode=beta_mode, chunk_size=4,
                                      dtype=torch.float64)
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    q, k, v = (p(x).reshape(2, 9, 3, 4) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    raw = layer.b_proj(x)
    beta = {"unconstrained": raw, "sigmoid2": 2 * torch.sigmoid(raw), "ones": torch.ones_like(raw)}[beta_mode]
    o = impl.deltaformer_attn(q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous(), write="q")
    torch.testing.assert_close(layer(x), layer.o_proj(o.reshape(2, 9, 12)))


@pytest.mark.parametrize("kernel", ["softmax", "linear"])
def test_decode_step_equals_forward(kernel: str) -> None:
    torch.manual_seed(1)
    layer = impl.DeltaFormerAttention(8, 2, kernel=kernel, dtype=torch.float64)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    full = layer(x)
    cache = layer.empty_cache(2)
    for t in range(7):
        y, cache = layer.decode_step(x[:, t], cache)
        torch.testing.assert_close(y, full[:, t], rtol=1e-12, atol=1e-12)
    assert cache.u.shape == (2, 7, 2, 4)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(2)
    layer = impl.DeltaFormerAttention(8, 2)
    layer(torch.randn(1, 11, 8)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_varlen_forward_equals_separate_sequences() -> None:
    torch.manual_seed(3)
    layer = impl.DeltaFormerAttention(8, 2, dtype=torch.float64)
    x = torch.randn(1, 10, 8, dtype=torch.float64)
    packed = layer(x, cu_seqlens=torch.tensor([0, 1, 6, 10]))
    for start, end in [(0, 1), (1, 6), (6, 10)]:
        torch.testing.assert_close(packed[:, start:end], layer(x[:, start:end]), rtol=1e-12, atol=1e-12)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="unknown beta_mode 'relu'"):
        impl.DeltaFormerAttention(8, 2, beta_mode="relu")
    with pytest.raises(ValueError, match=r"hidden_size \(10\) must be divisible by num_heads \(3\)"):
        impl.DeltaFormerAttention(10, 3)
    with pytest.raises(ValueError, match="x must be a 3-D tensor"):
        impl.DeltaFormerAttention(8, 2)(torch.randn(8))


def test_key_norm_gives_every_key_the_norm_of_its_head_gain() -> None:
    torch.manual_seed(0)
    layer = impl.DeltaFormerAttention(16, 2, key_norm=True, dtype=torch.float64)
    assert layer.k_gain is not None
    with torch.no_grad():
        layer.k_gain.copy_(torch.tensor([[0.5], [3.0]], dtype=torch.float64))
    _, k, _, _ = layer._heads(torch.randn(2, 7, 16, dtype=torch.float64))
    norms = k.norm(dim=-1)  # [B, T, H]
    # one normalisation and one multiplication: within a few units of float64 roundoff of the gain
    torch.testing.assert_close(norms, torch.tensor([0.5, 3.0], dtype=torch.float64).expand_as(norms), rtol=1e-15,
                               atol=0)
    assert impl.DeltaFormerAttention(16, 2).k_gain is None
