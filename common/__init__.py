"""Helpers every layer may import: per-purpose seeds, Gaussian sampling from an explicit generator,
epoch means of per-step scalars, the global RNG state, and where a run writes to TensorBoard."""
