"""proofs_checks: the evidence for the paper's claims, and for any kernel's agreement with the spec.

Four products, one subpackage each:

- ``claims/``: every claim of ``../shared/paper/equations.md`` section 6 as a check (mpmath at high precision
  through the precision-generic spec, Monte Carlo with confidence intervals, fitted slopes);
  ``python -m proofs_checks`` runs them and prints a verdict table.
- ``proofs/``: machine-checked proofs of the identities behind the checks (sympy for every size, mpmath.iv
  enclosures, exact arithmetic), each naming the check it backs; ``python -m proofs_checks.proofs``.
- ``differential/``: the differential harness that validates any kernel against the float64 spec;
  ``python -m proofs_checks.differential``.
- ``swap/``: the swap-tracking training experiment; ``python -m proofs_checks.swap``.
"""
