"""Shared core: the data model, tag schemes, featurization, decoding and metrics.

Training, evaluation, export and the engine all use these modules; none of them
imports torch.
"""
from nere.engine.core.types import Entity, Example, Relation, NO_RELATION

__all__ = ["Entity", "Example", "Relation", "NO_RELATION"]
