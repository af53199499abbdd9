"""The engine's core steps of an earlier git revision vs the working tree, in turns, in one process.

    python scripts/compare_core_revs.py --rev 091a108 runs/bundles/conll04-ner-bilstm-crf-int8 \
        --corpus runs/corpus/en-10k.parquet --docs 2000

Loads ``engine/core/{sentences,vocab_tokens,viterbi}.py`` of ``--rev`` (``git show``) as
stand-alone modules next to the current ones and times, on the first ``--docs`` documents:
the sentence rule over every document, the bundle's array tokenizer over every sentence
(word or character table), and the bundle's CRF decoder over the emission groups the
engine decodes (captured from one serial pass, units of ``--unit-docs``). Each step runs
old, new, old, new, ... ``--rounds`` times; prints the best microseconds per document of
each and checks that both give the same result.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

import nere.engine.core.sentences as new_sentences
import nere.engine.core.viterbi as new_viterbi
import nere.engine.core.vocab_tokens as new_vocab
from nere.engine.api import Engine
from nere.engine.pipeline import Unit
from nere.engine.segment import split_sentences
from revisions import old_module  # scripts/revisions.py


def timed_us(work: Callable[[], Any], docs: int) -> tuple[float, Any]:
    """Microseconds per document of one call of ``work``, and its result."""
    started = time.perf_counter()
    out = work()
    return (time.perf_counter() - started) / docs * 1e6, out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--rev", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--unit-docs", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    table = pq.read_table(args.corpus, columns=["id", "text"]).slice(0, args.docs)
    ids, texts = table.column("id").combine_chunks(), table.column("text").to_pylist()
    pipe = Engine.load(args.bundle, device="cpu", threads=1, streams=1).pipeline
    featurizer = pipe.ner.featurizer
    pieces = [t[s:e] for t in texts for s, e in split_sentences(t)]

    groups: list[tuple[np.ndarray, np.ndarray]] = []
    if pipe.crf is not None:  # the emission groups the engine decodes
        real = new_viterbi.CRFDecoder.decode
        new_viterbi.CRFDecoder.decode = lambda self, em, lens: groups.append((np.array(em), np.array(lens))) or real(
            self, em, lens)
        for a in range(0, len(texts), args.unit_docs):
            pipe.infer(pipe.prepare(Unit(ids.slice(a, args.unit_docs), texts[a : a + args.unit_docs])), overlap=False)
        new_viterbi.CRFDecoder.decode = real

    old = {name: old_module(args.rev, f"engine/core/{name}.py") for name in ("sentences", "vocab_tokens", "viterbi")}
    steps: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("sentence rule", lambda: [old["sentences"].sentence_spans(t, periods=True) for t in texts],
         lambda: [new_sentences.sentence_spans(t, periods=True) for t in texts]),
    ]
    if featurizer.array_tokenizer is not None:
        tok = featurizer.tokenizer
        old_table, new_table = old["vocab_tokens"].array_tokenizer(tok), new_vocab.array_tokenizer(tok)
        steps.append(("array tokenizer", lambda: old_table.encode(pieces), lambda: new_table.encode(pieces)))
    if groups:
        c = pipe.crf
        old_dec = old["viterbi"].CRFDecoder(c.trans, c.start, c.end)
        new_dec = new_viterbi.CRFDecoder(c.trans, c.start, c.end)
        steps.append(("CRF decoding", lambda: [old_dec.decode(e, n) for e, n in groups],
                      lambda: [new_dec.decode(e, n) for e, n in groups]))
    for name, run_old, run_new in steps:
        t_old, t_new, out_old, out_new = [], [], None, None
        for _ in range(args.rounds):
            t, out_old = timed_us(run_old, len(texts))
            t_old.append(t)
            t, out_new = timed_us(run_new, len(texts))
            t_new.append(t)
        print(f"{name:16s} {args.rev} {min(t_old):7.2f} us/doc, now {min(t_new):7.2f} us/doc, "
              f"x{min(t_old) / min(t_new):.2f}, same result: {same(out_old, out_new)}")


if __name__ == "__main__":
    main()
