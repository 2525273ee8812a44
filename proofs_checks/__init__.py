"""proofs_checks: the evidence for the paper's claims, and for any kernel's agreement with the spec.

``python -m proofs_checks`` runs every claim of ``../shared/paper/equations.md`` section 6 as a numerical check
(mpmath at high precision through the precision-generic spec, Monte Carlo with confidence intervals, fitted
slopes) and prints a verdict table.
"""
