"""Ahead-of-time compile report for the Triton backend: ``python -m impl.kernel_report``.

Compiles every kernel variant the launchers can request (``impl.triton_ops.*.aot_variants``: each kernel, each
launch configuration per head dimension, fp16 and bf16, varlen) for sm_80 and sm_90a (a variant of one tile
family only for the architecture that launches it: ``AotVariant.archs``) without a GPU, runs the
bundled ``ptxas -v`` on the PTX, and prints one row per (variant, arch): registers, spill bytes, shared memory and
the tensor-core instructions found in the PTX (``mma.sync`` on sm_80, ``wgmma.mma_async`` or ``mma.sync`` on
sm_90a). Exit status 1 if any variant fails to compile, spills, or has no tensor-core instruction.

Each variant is compiled with the specialisation Triton adds when it launches a kernel (``runtime_attrs``): pointer
arguments 16-byte aligned (torch allocations are) and integer arguments that are not ``do_not_specialize`` multiples
of 16, i.e. the divisibility hints that enable vectorised and asynchronous (cp.async / TMA-like) loads. Without them
the figures are not those of the code that runs.

Options: ``--quick`` compiles a representative subset (head dims 64 and 128, bf16, the softmax write kernel: the
largest register footprint of the four write kernels in the full report; for linear attention / the delta rule, the
delta rule's variants, whose DELTA=True kernels are supersets of the linear-attention ones);
``--jobs N`` worker processes (default 2); ``--only SUBSTRING`` filters kernel names.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import triton
from triton.backends.compiler import GPUTarget

from impl.triton_ops import _chunk as recurrent
from impl.triton_ops import deltaformer

__all__ = ["QUICK_HEAD_DIMS", "CompileResult", "compile_variant", "main", "runtime_attrs", "variants"]

ARCHS: tuple[int, ...] = (80, 90)
QUICK_HEAD_DIMS: tuple[int, ...] = (64, 128)
NO_MATMUL: frozenset[str] = frozenset({"deltaformer_bwd_kernel_rowdot"})
"""Kernels without a matmul (row reductions): no tensor-core instruction is expected in their PTX."""


@dataclass(frozen=True)
class CompileResult:
    """ptxas figures for one variant on one architecture; ``error`` is empty when compilation succeeded."""

    kernel: str
    label: str
    arch: int
    registers: int = 0
    spill_bytes: int = 0
    shared: int = 0
    mma: int = 0
    wgmma: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.spill_bytes == 0 and ((self.mma + self.wgmma) > 0 or self.kernel in NO_MATMUL)


def variants(quick: bool) -> list[object]:
    """The AOT variants of every Triton op (a subset with ``quick``)."""
    if quick:
        return [*deltaformer.aot_variants(head_dims=QUICK_HEAD_DIMS, dtypes=("bf16",), kernels=("softmax",),
                                          store_rs=(True,)),
                *recurrent.aot_variants(head_dims=QUICK_HEAD_DIMS, dtypes=("bf16",), ops=("delta_rule",))]
    return [*deltaformer.aot_variants(), *recurrent.aot_variants()]


_INT_TYPES = frozenset({"i32", "i64", "u32", "u64"})


def runtime_attrs(fn: Any, signature: dict[str, str]) -> dict[tuple[int], list[list[Any]]]:
    """The divisibility hints Triton's launcher derives from the arguments (``tt.divisibility`` 16): every pointer
    (16-byte aligned, as torch allocates) and every integer argument Triton specialises on (those not listed in
    ``do_not_specialize``; sizes such as B T H, assumed multiples of 16 as in the usual shapes)."""
    names = list(fn.arg_names)
    unspecialised = {p.name for p in fn.params if p.do_not_specialize}
    attrs: dict[tuple[int], list[list[Any]]] = {}
    for name, ty in signature.items():
        if ty.startswith("*") or (ty in _INT_TYPES and name not in unspecialised):
            attrs[(names.index(name),)] = [["tt.divisibility", 16]]
    return attrs


def _ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def compile_variant(task: tuple[bool, int, int]) -> CompileResult:
    """Compile variant ``index`` of ``variants(quick)`` for ``arch`` and measure it with ptxas."""
    quick, index, arch = task
    var = variants(quick)[index]
    kernel, label = var.kernel, var.label()  # type: ignore[attr-defined]
    try:
        src = triton.compiler.ASTSource(
            fn=var.fn,  # type: ignore[attr-defined]
            signature={**var.signature, **dict.fromkeys(var.constexprs, "constexpr")},  # type: ignore[attr-defined]
            constexprs=var.constexprs,  # type: ignore[attr-defined]
            attrs=runtime_attrs(var.fn, var.signature))  # type: ignore[attr-defined]
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": var.num_warps,  # type: ignore[attr-defined]
                                           "num_stages": var.num_stages})  # type: ignore[attr-defined]
        ptx = compiled.asm["ptx"]
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ptx)
        gpu = "sm_90a" if arch == 90 else f"sm_{arch}"
        proc = subprocess.run([_ptxas(), "-v", f"--gpu-name={gpu}", f.name, "-o", os.devnull],
                              capture_output=True, text=True, check=False)
        os.unlink(f.name)
        if proc.returncode != 0:
            return CompileResult(kernel, label, arch, error=f"ptxas: {proc.stderr.strip()[-300:]}")
        regs = re.search(r"Used (\d+) registers", proc.stderr)
        spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", proc.stderr)
        return CompileResult(kernel, label, arch, registers=int(regs.group(1)) if regs else -1,
                             spill_bytes=sum(int(s) for s in spills), shared=int(compiled.metadata.shared),
                             mma=len(re.findall(r"\bmma\.sync\.", ptx)),
                             wgmma=len(re.findall(r"\bwgmma\.mma_async\.", ptx)))
    except Exception as exc:  # a compile failure is a row in the report, not a crash
        return CompileResult(kernel, label, arch, error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")


def run(quick: bool, jobs: int, only: str = "") -> list[CompileResult]:
    """Compile every selected variant for every arch (``jobs`` processes)."""
    tasks = [(quick, i, arch) for i, v in enumerate(variants(quick)) for arch in ARCHS
             if only in v.kernel and arch in v.archs]  # type: ignore[attr-defined]
    if jobs <= 1:
        return [compile_variant(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(compile_variant, tasks))


def format_table(results: Sequence[CompileResult]) -> str:
    """The resource table, one row per (variant, arch)."""
    head = f"{'kernel':34} {'arch':7} {'regs':>4} {'spill':>5} {'smem':>6} {'tensor-core ops':17} {'ok':3} config"
    rows = [head, "-" * len(head)]
    for r in results:
        arch = "sm_90a" if r.arch == 90 else f"sm_{r.arch}"
        tc = f"wgmma {r.wgmma}" if r.wgmma else f"mma {r.mma}"
        if r.wgmma and r.mma:
            tc = f"wgmma {r.wgmma} mma {r.mma}"
        status = "ok" if r.ok else "NO"
        if r.error:
            rows.append(f"{r.kernel:34} {arch:7} {'-':>4} {'-':>5} {'-':>6} {'-':17} {status:3} {r.label} {r.error}")
        else:
            rows.append(f"{r.kernel:34} {arch:7} {r.registers:4d} {r.spill_bytes:5d} {r.shared:6d} {tc:17} "
                        f"{status:3} {r.label}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a representative subset of the variants")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="only kernels whose name contains this")
    args = parser.parse_args(argv)
    results = run(args.quick, args.jobs, args.only)
    print(format_table(results))
    bad = [r for r in results if not r.ok]
    no_wgmma = sorted({f"{r.kernel} [{r.label}]" for r in results
                       if r.arch == 90 and not r.error and r.wgmma == 0 and r.kernel not in NO_MATMUL})
    print(f"\n{len(results)} compilations, {len(bad)} failing (compile error, spills or no tensor-core op)")
    print(f"variants with matmuls but no wgmma on sm_90a (mma.sync only): {len(no_wgmma)}")
    for name in no_wgmma:
        print(f"  {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
