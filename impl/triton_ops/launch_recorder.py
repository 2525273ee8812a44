"""Record the kernel launches a Triton driver would issue on a GPU, without a GPU and without running anything.

``record()`` replaces the launch function of every Triton kernel (``kernel[grid](*args)``, the ``__getitem__`` of
``triton.runtime.jit.KernelInterface``, shared by ``@triton.jit``, ``@triton.autotune`` and ``@triton.heuristics``
kernels and by the interpreter's kernels) with a recorder, and records the PyTorch operators that launch a device
kernel (through a ``TorchDispatchMode``: element-wise ops, copies, fills, solves; views and allocations launch
nothing and are not recorded). Inside, launch decisions are made as on a GPU (``_runtime.planning_for_gpu``: GPU
tile sizes, the first candidate of each tuner). Autotuned third-party kernels are recorded with their first
configuration, the same rule.

Run the driver on ``device="meta"`` tensors: shapes and dtypes propagate, no memory is used and no arithmetic is done,
so the full-size launch sequence of, say, T = 8192 is recorded in milliseconds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from triton.runtime.jit import KernelInterface

from impl.triton_ops._runtime import planning_for_gpu

__all__ = ["Launch", "TensorInfo", "record"]


@dataclass(frozen=True)
class TensorInfo:
    """What the cost model needs to know of a tensor argument."""

    shape: tuple[int, ...]
    itemsize: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class Launch:
    """One device kernel launch: a Triton kernel (name, grid, arguments by parameter name, including constexprs and
    ``num_warps`` / ``num_stages``) or a PyTorch operator (name ``aten.<op>``, grid empty, ``inputs`` / ``outputs``)."""

    kernel: str
    grid: tuple[int, ...]
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= g
        return n

    @property
    def is_triton(self) -> bool:
        return not self.kernel.startswith("aten.")


def _describe(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return TensorInfo(tuple(x.shape), x.element_size())
    return getattr(x, "value", x)  # tl.constexpr -> its value


def _innermost(kernel: Any) -> Any:
    """The JIT (or interpreted) function under autotuner / heuristics wrappers."""
    while hasattr(kernel, "fn") and isinstance(kernel.fn, KernelInterface):
        kernel = kernel.fn
    return kernel


def _resolve(kernel: Any, grid: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Launch:
    """Bind the call's arguments to the kernel's parameter names, adding autotuner (first config) and heuristics
    values and the parameters' defaults, then evaluate the grid."""
    jit = _innermost(kernel)
    fn = jit.fn
    params = list(inspect.signature(fn).parameters.values())
    bound: dict[str, Any] = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    bound.update(dict(zip([p.name for p in params], args, strict=False)))
    bound.update(kwargs)
    layer = kernel
    chain = []
    while isinstance(layer, KernelInterface) and layer is not jit:
        chain.append(layer)
        layer = layer.fn
    options = {"num_warps": 4, "num_stages": 3}
    for wrapper in chain:
        configs = getattr(wrapper, "configs", None)
        if configs:
            bound.update(configs[0].kwargs)
            options = {"num_warps": configs[0].num_warps, "num_stages": configs[0].num_stages}
        values = getattr(wrapper, "values", None)
        if values:
            for name, heur in values.items():
                bound[name] = heur(bound)
    options = {**options, **{k: bound.pop(k) for k in ("num_warps", "num_stages") if k in bound}}
    g = grid(bound) if callable(grid) else grid
    g = tuple(int(x) for x in (g if isinstance(g, tuple | list) else (g,)))
    described = {name: _describe(value) for name, value in bound.items()}
    return Launch(fn.__name__, g, {**described, **options})


_NO_KERNEL = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach",
                        "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "alias",
                        "is_same_size", "resize_"})


class _AtenRecorder(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records every PyTorch operator that launches a device kernel."""

    def __init__(self, sink: list[Launch]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.sink = sink

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and args[0].device.type == "meta":
            return _meta_scalar(args[0])
        out = func(*args, **(kwargs or {}))
        if func.is_view or name in _NO_KERNEL:
            return out
        flat_in = [_describe(a) for a in _flatten(args) if isinstance(a, torch.Tensor)]
        flat_out = [_describe(a) for a in _flatten((out,)) if isinstance(a, torch.Tensor)]
        self.sink.append(Launch(f"aten.{name}", (), {"inputs": flat_in, "outputs": flat_out,
                                                      "kwargs": dict(kwargs or {})}))
        return out


def _meta_scalar(x: torch.Tensor) -> bool | float:
    """A host read of a meta scalar (``bool(t)``, ``t.item()``) has no value: it reads as the common path of the
    drivers' data-dependent checks (``impl._validate.all_finite``: the values are finite, so the non-finite
    correction is not applied): True for a boolean, 0.0 for a floating scalar; any other dtype is refused, since no
    default would be right."""
    if x.dtype == torch.bool:
        return True
    if x.dtype.is_floating_point:
        return 0.0
    raise RuntimeError(f"launch recorder: the driver reads a {x.dtype} scalar from a meta tensor; only boolean and "
                       f"floating checks (read as True and 0.0) can be recorded")


def _flatten(xs: Any) -> Iterator[Any]:
    for x in xs:
        if isinstance(x, list | tuple):
            yield from _flatten(x)
        else:
            yield x


@contextmanager
def record() -> Iterator[list[Launch]]:
    """Within the block every Triton launch and every kernel-launching PyTorch operator is appended to the yielded
    list instead of being executed (Triton) or is executed and recorded (PyTorch; run on meta tensors)."""
    launches: list[Launch] = []
    original: Callable[..., Any] = KernelInterface.__getitem__

    def recorder(self: Any, grid: Any) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            launches.append(_resolve(self, grid, args, kwargs))
        return launch

    KernelInterface.__getitem__ = recorder
    try:
        with planning_for_gpu(), _AtenRecorder(launches):
            yield launches
    finally:
        KernelInterface.__getitem__ = original
