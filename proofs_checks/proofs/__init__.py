"""Machine-checked proofs of the identities behind the claim checks, run by ``python -m proofs_checks.proofs``.

``record`` holds the Proof / ProofResult records and ``declare``; ``symbolic`` the sympy decision helpers;
``registry`` the explicit list of proof modules; ``run`` the runner, table and JSON. Each proof states the claim
check it backs (C1..C12, C8c), its method (symbolic, interval, exact) and its scope. docs/proofs.md lists them.
"""
