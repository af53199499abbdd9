"""Metrics against reference implementations: seqeval (strict), scikit-learn."""
from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, IOBES
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from nere.engine.core.metrics import entity_scores, prf, relation_scores, token_accuracy, triple_scores
from nere.engine.core.tags import spans_to_tags
from nere.engine.core.types import NO_RELATION

LABELS = ["PER", "LOC", "ORG", "MISC"]


def _overlaps(span, spans) -> bool:
    return any(span[0] < e and s < span[1] for s, e, _ in spans)


def _random_spans(rng: random.Random, length: int, tries: int) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for _ in range(tries):
        s = rng.randrange(length)
        span = (s, min(length, s + rng.randint(1, 4)), rng.choice(LABELS))
        if not _overlaps(span, out):
            out.append(span)
    return sorted(out)


def _perturb(rng: random.Random, gold, length: int) -> list[tuple[int, int, str]]:
    """A prediction near the gold: kept, relabelled, resized or dropped spans, plus extras."""
    pred: list[tuple[int, int, str]] = []
    for s, e, lab in gold:
        r = rng.random()
        if r < 0.5:
            cand = (s, e, lab)
        elif r < 0.65:
            cand = (s, e, rng.choice([l for l in LABELS if l != lab]))
        elif r < 0.85:
            cand = (s, max(s + 1, min(length, e + rng.choice([-1, 1]))), lab)
        else:
            continue
        if not _overlaps(cand, pred):
            pred.append(cand)
    for span in _random_spans(rng, length, rng.randint(0, 2)):
        if not _overlaps(span, pred):
            pred.append(span)
    return sorted(pred)


def _random_corpus(seed: int):
    rng = random.Random(seed)
    gold, pred, lengths = [], [], []
    for _ in range(rng.randint(1, 6)):
        n = rng.randint(1, 15)
        g = _random_spans(rng, n, rng.randint(0, 4))
        gold.append(g)
        pred.append(_perturb(rng, g, n))
        lengths.append(n)
    return gold, pred, lengths


def _seqeval(gold, pred, lengths, scheme_name: str):
    scheme = {"BIOES": IOBES, "BIO": IOB2}[scheme_name]
    y_true = [spans_to_tags(g, n, scheme_name) for g, n in zip(gold, lengths)]
    y_pred = [spans_to_tags(p, n, scheme_name) for p, n in zip(pred, lengths)]
    kw = dict(mode="strict", scheme=scheme, zero_division=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overall = {
            "precision": precision_score(y_true, y_pred, **kw),
            "recall": recall_score(y_true, y_pred, **kw),
            "f1": f1_score(y_true, y_pred, **kw),
        }
        has_any = any(gold) or any(pred)
        report = classification_report(y_true, y_pred, output_dict=True, **kw) if has_any else {}
    rows = {k: v for k, v in report.items() if not k.endswith(" avg")}
    return overall, rows


@pytest.mark.parametrize("scheme_name", ["BIOES", "BIO"])
def test_entity_scores_equal_seqeval_strict(scheme_name):
    checked_rows = 0
    for seed in range(250):
        gold, pred, lengths = _random_corpus(seed)
        ours = entity_scores(gold, pred)
        ref, rows = _seqeval(gold, pred, lengths, scheme_name)
        for key in ("precision", "recall", "f1"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), (seed, key)
        assert ours["support"] == sum(len(g) for g in gold)
        assert set(ours["per_label"]) == set(rows), seed
        for lab, row in rows.items():
            mine = ours["per_label"][lab]
            assert mine["precision"] == pytest.approx(row["precision"], abs=1e-12)
            assert mine["recall"] == pytest.approx(row["recall"], abs=1e-12)
            assert mine["f1"] == pytest.approx(row["f1-score"], abs=1e-12)
            assert mine["support"] == row["support"]
            checked_rows += 1
    assert checked_rows > 500  # the random cases really exercised per-label rows


def test_entity_scores_hand_made():
    # sentence 1: PER right, LOC with a wrong end, ORG missed; sentence 2: a spurious MISC,
    # LOC right, PER predicted as ORG
    gold = [[(0, 2, "PER"), (3, 5, "LOC"), (7, 8, "ORG")], [(1, 2, "LOC"), (4, 6, "PER")]]
    pred = [[(0, 2, "PER"), (3, 4, "LOC")], [(0, 1, "MISC"), (1, 2, "LOC"), (4, 6, "ORG")]]
    s = entity_scores(gold, pred)
    assert (s["precision"], s["recall"], s["support"]) == (2 / 5, 2 / 5, 5)
    assert s["f1"] == pytest.approx(0.4)
    assert s["per_label"]["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert s["per_label"]["LOC"]["precision"] == 0.5 and s["per_label"]["LOC"]["recall"] == 0.5
    assert s["per_label"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["per_label"]["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    lengths = [9, 7]
    ref, rows = _seqeval(gold, pred, lengths, "BIOES")
    assert s["f1"] == pytest.approx(ref["f1"])
    assert rows["PER"]["f1-score"] == pytest.approx(2 / 3)


def test_entity_scores_edge_cases():
    empty = entity_scores([[], []], [[], []])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["per_label"]) == (0.0, 0.0, 0.0, {})
    perfect = entity_scores([[(0, 1, "PER")]], [[(0, 1, "PER")]])
    assert perfect["f1"] == 1.0
    # an entity right in another sentence is not right
    assert entity_scores([[(0, 1, "PER")], []], [[], [(0, 1, "PER")]])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        entity_scores([[], []], [[]])


def test_prf_counts():
    assert prf(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    r = prf(3, 4, 6)
    assert (r["precision"], r["recall"], r["support"]) == (0.75, 0.5, 6)
    assert r["f1"] == pytest.approx(0.6)


REL_LABELS = [NO_RELATION, "Work_For", "Live_In", "Located_In", "OrgBased_In", "Kill"]


@pytest.mark.parametrize("seed", range(200))
def test_relation_scores_equal_sklearn(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    weights = [rng.random() * 4] + [rng.random() for _ in REL_LABELS[1:]]  # mostly no_relation
    gold = rng.choices(REL_LABELS, weights, k=n)
    pred = [g if rng.random() < 0.6 else rng.choice(REL_LABELS) for g in gold]
    labels = sorted((set(gold) | set(pred)) - {NO_RELATION})
    ours = relation_scores(gold, pred)
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    if not labels:  # only no_relation: nothing to average, scikit-learn has no answer
        assert ours["macro_f1"] == ours["micro_f1"] == 0.0
        return
    assert sorted(ours["per_label"]) == labels
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=labels, average=avg, zero_division=0)
        assert ours[f"{avg}_precision"] == pytest.approx(p, abs=1e-12)
        assert ours[f"{avg}_recall"] == pytest.approx(r, abs=1e-12)
        assert ours[f"{avg}_f1"] == pytest.approx(f, abs=1e-12)
    p, r, f, support = precision_recall_fscore_support(gold, pred, labels=labels, average=None, zero_division=0)
    for i, lab in enumerate(labels):
        row = ours["per_label"][lab]
        assert (row["precision"], row["recall"], row["support"]) == pytest.approx((p[i], r[i], support[i]))
        assert row["f1"] == pytest.approx(f[i])


def test_relation_scores_hand_made_and_custom_negative():
    gold = ["Other", "A", "A", "B", "Other"]
    pred = ["Other", "A", "B", "B", "A"]
    s = relation_scores(gold, pred, negative="Other")
    assert s["accuracy"] == 3 / 5
    assert s["per_label"]["A"]["precision"] == 0.5 and s["per_label"]["A"]["recall"] == 0.5
    assert s["per_label"]["B"]["precision"] == 0.5 and s["per_label"]["B"]["recall"] == 1.0
    assert s["macro_precision"] == 0.5 and s["macro_recall"] == 0.75
    assert s["micro_precision"] == 0.5 and s["micro_recall"] == pytest.approx(2 / 3)
    assert "Other" not in s["per_label"]
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        relation_scores(["A", "B"], ["A"])


PER_A, PER_B, ORG = (0, 2, "PER"), (5, 6, "PER"), (8, 10, "ORG")


@pytest.mark.parametrize(
    "wrong",
    [
        ((0, 3, "PER"), ORG, "Work_For"),  # head span wrong
        (PER_A, (8, 9, "ORG"), "Work_For"),  # tail span wrong
        ((0, 2, "LOC"), ORG, "Work_For"),  # head type wrong
        (PER_A, (8, 10, "LOC"), "Work_For"),  # tail type wrong
        (ORG, PER_A, "Work_For"),  # direction wrong
        (PER_A, ORG, "Live_In"),  # relation label wrong
    ],
)
def test_triple_scores_each_mistake_counts(wrong):
    gold = [{(PER_A, ORG, "Work_For"), (PER_B, ORG, "Work_For")}]
    pred = [{wrong, (PER_B, ORG, "Work_For")}]
    s = triple_scores(gold, pred)
    assert (s["precision"], s["recall"], s["support"]) == (0.5, 0.5, 2)
    assert triple_scores(gold, [set(gold[0])])["f1"] == 1.0


def test_triple_scores_across_sentences():
    gold = [[(PER_A, ORG, "Work_For")], [], [(PER_B, ORG, "Kill")]]
    pred = [[(PER_A, ORG, "Work_For"), (PER_B, ORG, "Kill")], [(PER_A, ORG, "Kill")], []]
    s = triple_scores(gold, pred)
    assert (s["precision"], s["recall"]) == (1 / 3, 1 / 2)
    assert s["f1"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="3 gold sentences but 2 predicted"):
        triple_scores(gold, pred[:2])


def test_token_accuracy():
    gold = [["B-PER", "I-PER", "O"], ["O"], []]
    pred = [["B-PER", "O", "O"], ["B-LOC"], []]
    assert token_accuracy(gold, pred) == 0.5
    assert token_accuracy([[0, 1, 2]], [[0, 1, 2]]) == 1.0
    assert token_accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        token_accuracy([["O", "O"]], [["O"]])
    with pytest.raises(ValueError):
        token_accuracy([["O"], ["O"]], [["O"]])
