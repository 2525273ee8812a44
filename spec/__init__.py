"""spec: the executable paper. Readable float64 NumPy (or mpmath, through the same code), one equation per function.

Modules, in the order of the paper (``../shared/paper/equations.md``): ``kernels`` (kappa and feature maps),
``updates`` (the update rules of section 3), ``deltaformer`` (DeltaFormer's write and read, and their equivalent
forms), and the rest; ``docs/equation_index.md`` is the equation index, generated from the docstrings
(``python -m spec.index``).
Precision: ``spec.precision``. Nothing here batches over heads or sequences: that is ``impl``'s job.
"""
