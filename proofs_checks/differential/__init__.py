"""The public differential harness: check any kernel with the ``impl`` signature against the float64 spec.

    python -m proofs_checks.differential mypkg.kernels:my_fn --op deltaformer_attn [--examples N] [--seed S] ...

Expected signature: ``my_fn(*tensors, **options)`` as ``impl.<op>``. Tensors in the op's order (``ops``):
``q, k, v, beta`` (DeltaFormer attention, delta rule), ``w, k, v, beta`` (DeltaFormer u), ``q, k, v`` (linear and
softmax attention), ``[B, T, H, D]`` (beta ``[B, T, H]``, always passed as a tensor). Keywords: ``chunk_size`` (an
int from the drawn pool, 1 to 100 unless ``--chunk-sizes`` declares others), ``cu_seqlens`` (None, or an int64 CPU
tensor ``[N + 1]`` of packed sequence bounds with B = 1), ``scale`` (None or a float), ``kernel`` and ``write``
(DeltaFormer), and for the stateful ops ``initial_state`` (None or ``[N, H, K, V]``) and ``output_final_state=True``.
Returns ``o`` ``[B, T, H, V]`` in the input dtype, or ``(o, final_state)`` for the stateful ops.

Outputs and gradients (float64 and float32 inputs by default) are compared with the spec over pinned cases (one per
bug class) and Hypothesis-drawn ones, short and long (several chunks); the exit code is 0 only if every case agrees
within the error model of ``tolerances`` under the kernel's declared ``Precision`` and ``Capabilities``.

Modules: ``ops`` (one record per op: everything op-specific), ``strategies`` (what is drawn), ``tolerances`` (the
error model and precision policies), ``conditioning`` (its triangular-solve term), ``bridge`` (the spec over
``[B, T, H, D]``), ``controls`` (float64 torch recurrences for reference gradients), ``poison`` (NaN-filled
``torch.empty``), ``compare`` (one case), ``search`` (many cases, distinct failures, coverage), ``shrink`` (the
shrinker), ``isolate`` (cases in a child process). The spec functions used: ``spec.deltaformer`` (DF.1, DF.2, DF.3,
DF.7, DF.8, DF.9) and ``spec.updates`` (UPD.1a linear attention, UPD.3a DeltaNet).
"""

from proofs_checks.differential import tolerances
from proofs_checks.differential.bridge import run_spec
from proofs_checks.differential.compare import CaseResult, HarnessError, call_kernel, check_case
from proofs_checks.differential.ops import OPS
from proofs_checks.differential.search import RunSummary, run
from proofs_checks.differential.strategies import Capabilities, Problem, explicit_problems, problems
from proofs_checks.differential.tolerances import Precision

__all__ = [
    "OPS",
    "Capabilities",
    "CaseResult",
    "HarnessError",
    "Precision",
    "Problem",
    "RunSummary",
    "call_kernel",
    "check_case",
    "explicit_problems",
    "problems",
    "run",
    "run_spec",
    "tolerances",
]
