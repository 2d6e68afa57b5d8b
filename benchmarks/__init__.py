"""Benchmarks for jaxmlp: gradient correctness and speed, training throughput, the hardware limit.

Run ``python -m benchmarks --help`` from the repository root. This package imports nothing
heavy at import time: ``python -m benchmarks`` first re-executes itself with a cleaned BLAS
environment, which only works before NumPy (and its BLAS) is loaded.
"""
