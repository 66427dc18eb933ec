"""spin_jax: SPIN (model fitting in the loop) in JAX/Flax."""

__version__ = "0.1.0"
