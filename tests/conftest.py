"""Shared pytest set-up: CPU only, quiet TF, deterministic float32 matmuls."""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Exact float32 matmuls, so parity tests compare like with like.
os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'highest')
