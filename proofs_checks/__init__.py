"""proofs_checks: the evidence for the paper's claims, and for any kernel's agreement with the spec.

Three products, one subpackage each:

- ``claims/``: every claim of ``../shared/paper/equations.md`` section 6 as a check (mpmath at high precision
  through the precision-generic spec, Monte Carlo with confidence intervals, fitted slopes);
  ``python -m proofs_checks`` runs them and prints a verdict table.
- ``differential/``: the differential harness that validates any kernel against the float64 spec;
  ``python -m proofs_checks.differential``.
- ``swap/``: the swap-tracking training experiment; ``python -m proofs_checks.swap``.
"""
