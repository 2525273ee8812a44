"""The swap-task expressivity experiment (issue 6): tiny Transformer, DeltaNet and DeltaFormer models trained on CPU.

``python -m proofs_checks.swap`` trains every model on every n for a fixed budget and evaluates held-out sequences
at the training length and longer; see ``docs/swap_experiment.md`` for the design and the results.

Modules: ``data`` (task formulation on top of ``spec.swap_tracking``'s generator, baselines), ``models`` (the six
models, every sequence op from ``impl``), ``train`` (budget, evaluation), ``sweep`` (the sweep and its outputs).
"""
