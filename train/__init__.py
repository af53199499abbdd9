"""Training: dataset loaders, featurization into tensors, models, trainer, checkpoints.

Uses :mod:`nere.engine.core` for spans, tag schemes, featurization, decoding and metrics.
"""
