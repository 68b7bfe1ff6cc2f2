"""Pure functions over measured results; analysis never runs a model."""
