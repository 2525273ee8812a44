"""impl: the performance package (PyTorch path that runs anywhere, Triton kernels for GPUs)."""
