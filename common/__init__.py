"""Helpers every layer may import: per-purpose seeds, Gaussian sampling from an explicit generator,
and where a run writes to TensorBoard."""
