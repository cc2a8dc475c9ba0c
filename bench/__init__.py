"""Throughput benchmark: batchlab's engine against a bare JAX scan, PyTorch and scikit-learn.

Run ``python -m bench`` from the repository root (``--help`` for options). Everything runs in one process on
the CPU, on batchlab's default digits split (N_train = 1437) with an MLP 64-128-10, plain SGD at lr 0.03.
"""
