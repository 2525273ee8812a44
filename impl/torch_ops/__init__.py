"""The PyTorch backend: chunked, batched over batch and heads, runs on any device. See ``impl/README.md``.

One module per op; each exports the backend function of the same name with the contract in ``impl/README.md``.
"""
