"""`nere train ner` options for the extra per-token inputs, kept apart from the command
definitions: decorate a command with :func:`feature_options` and pass
``features=feature_request(opts)`` to :func:`nere.train.ner_task.build_ner`."""
from __future__ import annotations

from typing import Any

import click

FEATURE_OPTIONS = [
    click.option("--case-features", is_flag=True,
                 help="Add a letter-case class per token (lower/Title/UPPER/mixed/digit/punct/other) beside the encoder "
                      "output or embedding: for uncased encoders."),
    click.option("--bigrams", is_flag=True, help="BiLSTM kinds: add character-bigram embeddings (vocabulary from training text)."),
    click.option("--bigram-min-freq", default=1, show_default=True, type=click.IntRange(1),
                 help="Bigrams seen fewer times in training text share the unknown id."),
    click.option("--lexicon", default=None, metavar="PATH|jieba",
                 help="SoftLexicon features from a 'word freq' dictionary file, or 'jieba' for jieba's dictionary "
                      "(read as data); only words found in the training text are kept."),
    click.option("--lexicon-min-count", default=1, show_default=True, type=click.IntRange(1),
                 help="Keep the dictionary words found at least this many times in the training text."),
    click.option("--lexicon-k", default=3, show_default=True, type=click.IntRange(1),
                 help="Words kept per character and set (B/M/E/S), the most frequent first."),
]


def feature_options(f):
    for opt in reversed(FEATURE_OPTIONS):
        f = opt(f)
    return f


def feature_request(opts: dict[str, Any]) -> dict[str, Any] | None:
    """build_ner's ``features`` argument from the parsed options (None: no extra inputs)."""
    req = {"case": bool(opts.get("case_features")), "bigrams": bool(opts.get("bigrams")),
           "bigram_min_freq": int(opts.get("bigram_min_freq") or 1), "lexicon": opts.get("lexicon"),
           "lexicon_k": int(opts.get("lexicon_k") or 3),
           "lexicon_min_count": int(opts.get("lexicon_min_count") or 1)}
    return req if (req["case"] or req["bigrams"] or req["lexicon"]) else None
