"""The paper's claims (equations.md section 6) as numerical checks, run by ``python -m proofs_checks``.

``declaration`` holds the Check / Outcome / Profile records, ``registry`` the explicit list of check modules
(``snr``, ``update_rules``, ``deltaformer_identities``, ``swap_tracking``), ``run`` the runner, table and reports.
"""
