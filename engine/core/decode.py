"""Model outputs -> character spans. One path for evaluation and the engine.

Spans are trimmed by :mod:`nere.engine.core.trim` when the text is given (evaluation
scores what the engine emits; the engine trims the same way in its array path).
"""
from __future__ import annotations

import numpy as np

from nere.engine.core.featurize import token_to_char_spans
from nere.engine.core.tags import TagSet
from nere.engine.core.trim import trim_spans
from nere.engine.core.viterbi import CRFDecoder, argmax_decode, viterbi_decode


def decode_tags(
    emissions: np.ndarray,
    lengths: np.ndarray,
    crf: dict[str, np.ndarray] | CRFDecoder | None = None,
) -> np.ndarray:
    """Tag ids per position: Viterbi when CRF parameters (or a decoder kept for them) are
    given, else argmax."""
    if crf is None:
        return argmax_decode(emissions, lengths)
    if isinstance(crf, CRFDecoder):
        return crf.decode(emissions, lengths)
    return viterbi_decode(emissions, lengths, crf["transitions"], crf["start"], crf["end"])


def kept_decoder(crf: dict[str, np.ndarray] | CRFDecoder | None) -> CRFDecoder | None:
    """A decoder to keep for many :func:`decode_tags` calls of one model: its bounds are
    computed once, and it stops certifying paths that its model's emissions never let it
    certify (a model early in training)."""
    if crf is None or isinstance(crf, CRFDecoder):
        return crf
    return CRFDecoder(crf["transitions"], crf["start"], crf["end"])


def row_char_spans(
    tagset: TagSet, tag_ids: np.ndarray, offsets: np.ndarray, lead: int, n_content: int,
    text: str | None = None,
) -> list[tuple[int, int, str]]:
    """Character spans of one row: tags of its content positions, mapped via offsets.

    Special positions ([CLS]/[SEP]/padding) are ignored whatever the model put there.
    ``offsets`` are the row's (T, 2) batch offsets. With the row's ``text``, spans are
    trimmed (:func:`~nere.engine.core.trim.trim_spans`: no edge spaces or stray
    punctuation, no line break inside; punctuation-only spans dropped).
    """
    content = slice(lead, lead + n_content)
    token_spans = tagset.ids_to_spans(tag_ids[content])
    spans = token_to_char_spans(offsets[content], token_spans)
    return spans if text is None else trim_spans(text, spans)
