"""The training layer: evaluation, live logging, video."""
