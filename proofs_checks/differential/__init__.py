"""The public differential harness: check any kernel with the ``impl`` signature against the float64 spec.

    python -m proofs_checks.differential mypkg.kernels:my_fn --op deltaformer_attn [--examples N] [--seed S]

``my_fn`` takes the arguments of ``impl.<op>`` (``[B, T, H, D]`` tensors, keyword options, ``cu_seqlens``).
Outputs and gradients (float64 and float32 inputs by default) are compared with the spec over Hypothesis-drawn
cases, tiny and long (several chunks); the exit code is 0 only if every case agrees within the error model of
``tolerances``. Modules: ``strategies`` (what is drawn), ``tolerances`` (the error model), ``conditioning`` (its
triangular-solve term), ``bridge`` (the spec over ``[B, T, H, D]``), ``controls`` (float64 torch recurrences for
reference gradients), ``check`` (one case), ``runner`` (many cases). The spec functions used: ``spec.deltaformer``
(DF.1, DF.2, DF.3, DF.7, DF.8, DF.9) and ``spec.updates`` (UPD.1a linear attention, UPD.3a DeltaNet).
"""

from proofs_checks.differential.check import CaseResult, HarnessError, call_kernel, check_case
from proofs_checks.differential.runner import RunSummary, run
from proofs_checks.differential.strategies import OPS, Problem, problems

__all__ = [
    "OPS",
    "CaseResult",
    "HarnessError",
    "Problem",
    "RunSummary",
    "call_kernel",
    "check_case",
    "problems",
    "run",
]
