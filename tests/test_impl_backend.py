"""Backend selection (impl/_backend.py): how TRITON_INTERPRET is read, and what the interpreter is refused."""

from __future__ import annotations

import pytest
import torch

import impl
from impl._backend import Backend, backend_module, interpreter_enabled
from tests.test_impl_validation import ALL_OPS, _call, _qkvb

SETTINGS = ["1", "0", "", "true", "True", "TRUE", "on", "yes", "y", "Y", "2", "false", "off", "no", " 1", "t"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_triton_interpret_is_read_as_triton_reads_it(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """impl's one reading of TRITON_INTERPRET agrees with Triton's own (triton.knobs) and with the Triton host's
    ``interpreting``. Catches: "true" accepted by one and refused by the other (the kernels would then run in the
    interpreter while the dispatcher refuses CPU tensors, or the reverse)."""
    knobs = pytest.importorskip("triton.knobs", reason="this Triton has no triton.knobs to compare with")
    from impl.triton_ops._runtime import interpreting

    monkeypatch.setenv("TRITON_INTERPRET", setting)
    assert interpreter_enabled() == interpreting() == bool(knobs.runtime.interpret), setting


@pytest.mark.parametrize("op", ALL_OPS)
def test_bfloat16_is_refused_in_the_interpreter(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter's bf16 tl.dot returns garbage (relative error ~5e8): a clear RuntimeError instead."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="cannot compute bfloat16 inputs in Triton's interpreter"):
        _call(op, _qkvb(dtype=torch.bfloat16), backend="triton")


def test_bfloat16_is_not_refused_by_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = _call("deltaformer_attn", _qkvb(dtype=torch.bfloat16), backend="torch")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert impl.softmax_attn(*(_qkvb(dtype=torch.bfloat16)[n] for n in "qkv")).dtype == torch.bfloat16


MODULE_OF = {"deltaformer_u": "deltaformer", "deltaformer_attn": "deltaformer", "delta_rule": "delta_rule",
             "linear_attn": "linear_attn", "softmax_attn": "softmax_attn"}


@pytest.mark.parametrize("backend", list(Backend), ids=str)
@pytest.mark.parametrize("op", ALL_OPS)
def test_every_backend_provides_every_public_op(op: str, backend: Backend) -> None:
    """What backend="auto" dispatches to exists, without needing a GPU to find out. Catches: softmax_attn on CUDA
    tensors routed to an impl.triton_ops.softmax_attn that did not exist."""
    if backend is Backend.TRITON:
        pytest.importorskip("triton", reason="Triton is not installed")
    assert callable(getattr(backend_module(backend, MODULE_OF[op]), op))
