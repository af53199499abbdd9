"""Relation extraction: pair data, the five kinds, TransE, checkpoints, the CLI."""
from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner

from nere.engine.core.featurize import Featurizer
from nere.engine.core.types import NO_RELATION, Entity, Example, Relation
from nere.train.checkpoint import load_checkpoint, save_checkpoint
from nere.train.datasets import write_jsonl
from nere.train.re_features import collate_pairs, pair_sentences, sample_pairs, type_pairs_of
from nere.train.models.re import relative_positions
from nere.train.re_task import build_re, evaluate_re, predict_re, re_batches
from nere.train.trainer import TrainConfig, fit
from nere.train.vocab import CLS, PAD, SEP, build_vocab_tokenizer

KINDS = ["bert-multitask", "bert-softmax", "bilstm", "bilstm-att", "acnn"]
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_LSTM = {"embedding_dim": 24, "hidden_size": 24}
TINY_HEAD = {"channels": 32, "type_dim": 8, "transe_dim": 16, "pos_dim": 8, "max_distance": 10}


def make_example(text: str, ents: list[tuple[str, str]], rels: list[tuple[int, int, str]]) -> Example:
    """Entities given by surface (first occurrence after the previous entity) and label."""
    entities, pos = [], 0
    for surface, label in ents:
        start = text.index(surface, pos)
        entities.append(Entity(start, start + len(surface), label))
        pos = start + len(surface)
    order = sorted(range(len(entities)), key=lambda i: entities[i])
    new = {old: k for k, old in enumerate(order)}
    return Example(text, [entities[i] for i in order], [Relation(new[h], new[t], lab) for h, t, lab in rels])


def toy_examples() -> list[Example]:
    """Eight short sentences; every word occurs at least twice (the BiLSTM word vocabulary)."""
    P, O, L = "Peop", "Org", "Loc"
    return [
        make_example("John Smith works for Acme in Boston .", [("John Smith", P), ("Acme", O), ("Boston", L)],
                     [(0, 1, "Work_For"), (1, 2, "OrgBased_In")]),
        make_example("Mary Jones lives in Paris .", [("Mary Jones", P), ("Paris", L)], [(0, 1, "Live_In")]),
        make_example("Acme is based in Paris .", [("Acme", O), ("Paris", L)], [(0, 1, "OrgBased_In")]),
        make_example("Mary Jones works for Globex .", [("Mary Jones", P), ("Globex", O)], [(0, 1, "Work_For")]),
        make_example("Globex is based in Boston .", [("Globex", O), ("Boston", L)], [(0, 1, "OrgBased_In")]),
        make_example("John Smith killed Mary Jones in Paris .", [("John Smith", P), ("Mary Jones", P), ("Paris", L)],
                     [(0, 1, "Kill")]),
        make_example("Mary Jones killed John Smith in Boston .", [("Mary Jones", P), ("John Smith", P), ("Boston", L)],
                     [(0, 1, "Kill")]),
        make_example("John Smith lives in Boston .", [("John Smith", P), ("Boston", L)], [(0, 1, "Live_In")]),
    ]


def char_featurizer(texts, max_length: int = 64) -> Featurizer:
    tok = build_vocab_tokenizer(texts, level="char")
    return Featurizer(tok, max_length=max_length, cls_token=CLS, sep_token=SEP, pad_token=PAD)


def tiny_re(kind: str, examples, dropout: float = 0.0):
    return build_re(kind, examples, encoder="random", dropout=dropout, head=dict(TINY_HEAD),
                    bert_size=TINY_BERT, lstm=TINY_LSTM)


# ------------------------------------------------------------------------------ pairs
def test_pairs_counts_directions_labels_and_masks():
    ex = make_example("Ann met Bob at Acme .", [("Ann", "Peop"), ("Bob", "Peop"), ("Acme", "Org")],
                      [(0, 2, "Work_For"), (2, 1, "Employs")])
    feat = char_featurizer([ex.text])
    labels = [NO_RELATION, "Employs", "Work_For"]
    (sent,), stats = pair_sentences([ex], feat, labels, ["Org", "Peop"])
    assert len(sent.pairs) == 6 and stats.pairs == 6 and stats.positive == 2
    got = {(h, t): lab for h, t, lab in sent.pairs}
    assert got[(0, 2)] == "Work_For" and got[(2, 1)] == "Employs"
    assert got[(2, 0)] == NO_RELATION and got[(1, 2)] == NO_RELATION  # direction matters
    assert [labels[i] for i in sent.label_ids] == [lab for *_, lab in sent.pairs]
    b = collate_pairs([sent], feat)
    assert b["pair_index"].tolist() == [0] * 6
    # masks cover exactly the entity's characters, shifted past [CLS]
    for p, (h, t, _) in enumerate(sent.pairs):
        for mask, ent in ((b["head_mask"][p], ex.entities[h]), (b["tail_mask"][p], ex.entities[t])):
            pos = torch.nonzero(mask).flatten().tolist()
            offs = b["batch"].offsets[0]
            assert offs[pos[0], 0] == ent.start and offs[pos[-1], 1] == ent.end
            assert pos == list(range(pos[0], pos[-1] + 1)) and pos[0] >= feat.lead
    assert b["head_type"].tolist() == [sent.type_ids[h] for h, _, _ in sent.pairs]
    assert sorted(b["labels"].tolist()) == sorted(sent.label_ids)


def test_pairs_batch_rows_and_truncation_counted():
    a = make_example("Ann saw Bob .", [("Ann", "Peop"), ("Bob", "Peop")], [(0, 1, "Kill")])
    long_text = "Cy lives far away from " + "x " * 40 + "Rome ."
    b = make_example(long_text, [("Cy", "Peop"), ("Rome", "Loc")], [(0, 1, "Live_In")])
    feat = char_featurizer([a.text, b.text], max_length=30)
    sents, stats = pair_sentences([a, b], feat, [NO_RELATION, "Kill", "Live_In"], ["Loc", "Peop"])
    assert stats.truncated == 1 and stats.lost_entities == 1
    assert stats.lost_pairs == 2 and stats.lost_positive == 1
    batch = collate_pairs(sents, feat)
    assert batch["pair_index"].tolist() == [0, 0]  # the lost pairs are not fed to the model


def test_negative_sampling_ratio():
    ents = [("A1", "Peop"), ("B1", "Peop"), ("C1", "Org"), ("D1", "Org"), ("E1", "Loc")]
    ex = make_example("A1 B1 C1 D1 E1 .", ents, [(0, 2, "Work_For"), (1, 3, "Work_For")])
    none = make_example("A1 B1 C1 .", ents[:3], [])
    feat = char_featurizer([ex.text])
    (s, s0), _ = pair_sentences([ex, none], feat, [NO_RELATION, "Work_For"], ["Loc", "Org", "Peop"])
    assert len(s.pairs) == 20
    everything = sample_pairs(s, -1, random.Random(0))
    assert everything == sorted(s.usable) and sample_pairs(s, 0, random.Random(0)) == everything
    rng = random.Random(0)
    for ratio, n_neg in ((1.0, 2), (2.0, 4), (0.5, 1), (100.0, 18)):
        chosen = sample_pairs(s, ratio, rng)
        labels = [s.label_ids[i] for i in chosen]
        assert labels.count(1) == 2 and labels.count(0) == n_neg
    assert len(sample_pairs(s0, 1.0, rng)) == 1  # no positives: still one negative
    draws = {tuple(sample_pairs(s, 1.0, rng)) for _ in range(20)}
    assert len(draws) > 1  # resampled, not a fixed subset
    assert sample_pairs(s, 1.0, random.Random(5)) == sample_pairs(s, 1.0, random.Random(5))


def test_predict_on_given_entities_with_type_filter():
    exs = toy_examples()
    model, _, feat, _ = tiny_re("bilstm", exs)
    given = [ex.entities[:2] for ex in exs]  # e.g. "predicted" entities: the first two only
    out = predict_re(model, feat, exs, entities=given, type_pairs={("Peop", "Org")})
    assert out["pairs"][0] == [(0, 1, "Work_For")]  # John Smith -> Acme; Boston dropped, Org->Peop filtered
    for pairs, ents in zip(out["pairs"], given):
        for h, t, gold in pairs:
            assert (ents[h].label, ents[t].label) == ("Peop", "Org") or gold != NO_RELATION
    assert len(out["labels"][0]) == 1 and all(isinstance(t, set) for t in out["triples"])


def test_type_pairs_and_labels():
    exs = toy_examples()
    assert type_pairs_of(exs) == [("Org", "Loc"), ("Peop", "Loc"), ("Peop", "Org"), ("Peop", "Peop")]
    model, *_ = tiny_re("bilstm", exs)
    assert model.relation_labels[0] == NO_RELATION
    assert model.relation_labels[1:] == ["Kill", "Live_In", "OrgBased_In", "Work_For"]


# ------------------------------------------------------------------------------ models
@pytest.mark.parametrize("kind", KINDS)
def test_kind_overfits_toy_sentences(kind):
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_re(kind, exs)
    make = re_batches(model, feat, exs, batch_size=2)
    cfg = TrainConfig(epochs=40, batch_size=2, lr=1e-2 if "bert" not in kind else 3e-3, warmup=0.0,
                      patience=8, progress=False)  # stops soon after reaching 1.0
    cfg.head_lr = cfg.lr
    fit(model, make, lambda m: evaluate_re(m, feat, exs), "macro_f1", cfg)
    scores = evaluate_re(model, feat, exs)
    assert scores["macro_f1"] >= 0.9, scores
    assert scores["pairs"] == sum(len(e.entities) * (len(e.entities) - 1) for e in exs)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_invariance_and_checkpoint_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    exs = toy_examples()
    model, tok, feat, _ = tiny_re(kind, exs)
    model.eval()
    # a sentence's logits must not depend on its batch neighbours' padding
    (short, long_), _ = pair_sentences([exs[2], exs[0]], feat, model.relation_labels, model.entity_labels)
    with torch.no_grad():
        alone = model.pair_logits(collate_pairs([short], feat))[0]
        mixed = model.pair_logits(collate_pairs([short, long_], feat))[0][: len(short.usable)]
    assert torch.allclose(alone, mixed, atol=1e-5)
    before = predict_re(model, feat, exs)
    save_checkpoint(model, tok, tmp_path / "ckpt", {"task": "re"})
    loaded, feat2, config = load_checkpoint(tmp_path / "ckpt")
    after = predict_re(loaded, feat2, exs)
    assert config["model"] == kind and config["relation_labels"] == model.relation_labels
    assert after["labels"] == before["labels"]
    graphs = loaded.export_graphs()
    assert [g.name for g in graphs] == ["ner", "re"] and graphs[0].outputs == ["hidden"]
    with torch.no_grad():
        hidden = graphs[0].module(*graphs[0].dummy)
        logits = graphs[1].module(hidden, *graphs[1].dummy[1:])
    assert hidden.shape[-1] == loaded.stage1_size  # the stage-1 layout each kind declares
    assert logits.shape == (3, len(model.relation_labels))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_same_conv_is_conv1d(kernel):
    from torch.nn import functional as F

    from nere.train.models.re import same_conv

    torch.manual_seed(kernel)
    x, w, b = torch.randn(4, 9, 6), torch.randn(5, 6, kernel), torch.randn(5)
    want = F.conv1d(x.transpose(1, 2), w, b, padding=kernel // 2).transpose(1, 2)
    assert torch.allclose(same_conv(x, w, b), want, atol=1e-5)
    assert torch.allclose(same_conv(x[:, :1], w), F.conv1d(x[:, :1].transpose(1, 2), w, padding=kernel // 2).transpose(1, 2), atol=1e-5)


def _pair_batch(model, feat, exs):
    sents, _ = pair_sentences(exs, feat, model.relation_labels, model.entity_labels)
    b = collate_pairs(sents, feat)
    return b, model.forward_stage1(b["input_ids"], b["attention_mask"])


def _eval_pair_batch(kind: str, seed: int):
    """A tiny model of ``kind`` in eval mode, the toy examples' pair batch and its stage-1 output."""
    torch.manual_seed(seed)
    exs = toy_examples()
    model, _, feat, _ = tiny_re(kind, exs)
    model.eval()
    with torch.no_grad():
        b, hidden = _pair_batch(model, feat, exs)
    return model, b, hidden


@pytest.mark.parametrize("kind", ["bilstm", "bilstm-att"])
def test_recurrent_token_layer_split_across_stages_is_the_concat_layer(kind):
    """W_s state (stage 1) + W_p [pos1; pos2] (stage 2) == the layer over the concatenation."""
    model, b, hidden = _eval_pair_batch(kind, seed=0)
    with torch.no_grad():
        got, valid = model.token_features(hidden, b["pair_index"], b["head_mask"], b["tail_mask"])
        rows = hidden.index_select(0, b["pair_index"])
        h = model.encoder.hidden_size
        p1 = model.pos1(relative_positions(b["head_mask"], model.max_distance))
        p2 = model.pos2(relative_positions(b["tail_mask"], model.max_distance))
        x = torch.cat([rows[..., :h], p1, p2], dim=-1) * valid.unsqueeze(-1)
        want = torch.tanh(model.mix(x)) * valid.unsqueeze(-1)
    assert torch.equal(valid, rows[..., h]) and valid.sum() > 0 and (valid == 0).any()
    assert torch.allclose(got * valid.unsqueeze(-1), want, atol=1e-5)
    assert torch.all(got[valid == 0] == -1.0)  # padding: tanh of stage 1's NEG_INF, below every real token


@pytest.mark.parametrize("kind", ["bilstm", "bilstm-att"])
def test_entity_means_from_running_sums_equal_the_masked_means(kind):
    """e1's and e2's means from each sentence's running sums equal the mean over a per-pair
    copy of the states, for spans anywhere (first and last token included) and no span."""
    from nere.train.models.re import masked_mean

    model, b, hidden = _eval_pair_batch(kind, seed=1)
    with torch.no_grad():
        h, width = model.encoder.hidden_size, hidden.shape[1]
        heads, tails = b["head_mask"].clone(), b["tail_mask"].clone()
        heads[0], tails[0] = 0, 0
        heads[0, 0], tails[0, width - 1] = 1, 1  # a span at the very start and one at the very end
        heads[1] = 0  # no marked token
        got_h, got_t = model.entity_means(hidden, b["pair_index"], heads, tails)
        rows = hidden.index_select(0, b["pair_index"])[..., :h]
        assert torch.allclose(got_h, masked_mean(rows, heads), atol=1e-5)
        assert torch.allclose(got_t, masked_mean(rows, tails), atol=1e-5)
        assert torch.all(got_h[1] == 0) and b["head_mask"].sum() > len(b["pair_index"])  # some spans longer than one


def test_acnn_window_attention_split_across_stages_is_the_paper_convolution():
    """r_i = tanh(s_i W z_i + b) over [word; pos1; pos2] windows, as one convolution would give it."""
    from torch.nn import functional as F

    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_re("acnn", exs)
    model.eval()
    with torch.no_grad():
        b, hidden = _pair_batch(model, feat, exs)
        pi, hm, tm = b["pair_index"], b["head_mask"], b["tail_mask"]
        got = model.forward_stage2(hidden, pi, hm, tm, b["head_type"], b["tail_type"])
        # the reference: one convolution over the concatenated features, scaled per window
        words = model.encoder(b["input_ids"], b["attention_mask"]).index_select(0, pi)
        valid = b["attention_mask"].to(torch.float32).index_select(0, pi)
        words = words * valid.unsqueeze(-1)
        p1 = model.pos1(relative_positions(hm, model.max_distance))
        p2 = model.pos2(relative_positions(tm, model.max_distance))
        x = torch.cat([words, p1, p2], dim=-1) * valid.unsqueeze(-1)
        e1 = (words * hm.unsqueeze(-1)).sum(1) / hm.sum(1, keepdim=True)
        e2 = (words * tm.unsqueeze(-1)).sum(1) / tm.sum(1, keepdim=True)
        d = words.shape[-1] ** -0.5
        a1 = torch.softmax((words @ e1.unsqueeze(-1)).squeeze(-1) * d + (1 - valid) * -1e4, dim=1)
        a2 = torch.softmax((words @ e2.unsqueeze(-1)).squeeze(-1) * d + (1 - valid) * -1e4, dim=1)
        s = valid.sum(1, keepdim=True) * (a1 + a2) / 2
        wz = F.conv1d(x.transpose(1, 2), model.conv.weight, padding=model.conv.padding).transpose(1, 2)
        r = torch.tanh(wz * s.unsqueeze(-1) + model.conv.bias)
        g = model.U(r) @ model.relation_embedding
        att = torch.softmax(g + (1 - valid.unsqueeze(-1)) * -1e4, dim=1)
        pooled = torch.einsum("ptc,ptr->pcr", r, att).max(dim=-1).values
        want = model.out(torch.cat([pooled, e1, e2], dim=-1))
    assert torch.allclose(got, want, atol=1e-4)


def test_acnn_refuses_a_checkpoint_of_the_per_word_attention():
    from nere.train.models.re import ACNN

    model, _, _, _ = tiny_re("acnn", toy_examples())
    assert model.config["head"]["input_attention"] == "window"
    old = {**model.config, "head": {k: v for k, v in model.config["head"].items() if k != "input_attention"}}
    with pytest.raises(ValueError, match="retrain"):
        ACNN(old)


def test_acnn_rejects_an_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        build_re("acnn", toy_examples(), encoder="random", head={**TINY_HEAD, "kernel": 4}, lstm=TINY_LSTM)


def test_transe_distance_and_margin_loss():
    from nere.train.models.re import transe_distance, transe_margin_loss

    h, r = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(transe_distance(h, r, h + r), torch.zeros(4), atol=1e-6)
    assert (transe_distance(h, r, h + r + 0.5) > 0).all()
    r_bad = r + 3.0
    assert transe_margin_loss(h, r, r_bad, h + r, margin=1.0).item() == 0.0  # gold fits, corrupt is far
    assert transe_margin_loss(h, r_bad, r, h + r, margin=1.0).item() > 0.0  # corrupt fits better
    assert transe_margin_loss(h, r, r, h + r, margin=1.0).item() == pytest.approx(1.0)  # margin only
    assert transe_margin_loss(h[:0], r[:0], r[:0], h[:0], margin=1.0).item() == 0.0


def test_span_positions_and_between_context():
    from nere.train.models.re import between_mask, masked_max, relative_positions, span_bounds

    head = torch.tensor([[0, 1, 1, 0, 0, 0, 0.0], [0, 0, 0, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0, 0]])
    tail = torch.tensor([[0, 0, 0, 0, 0, 1, 1.0], [0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 0]])
    first, last = span_bounds(head)
    assert first.flatten().tolist() == [1, 5, 1] and last.flatten().tolist() == [2, 5, 3]
    assert relative_positions(head, 2)[0].tolist() == [1, 2, 2, 3, 4, 4, 4]  # -1, 0, 0, +1, +2 (clipped)
    assert between_mask(head, tail).tolist() == [[0, 0, 0, 1, 1, 0, 0], [0] * 7, [0] * 7]  # e2 first; nested
    x = torch.arange(14.0).reshape(1, 7, 2).repeat(3, 1, 1)
    pooled = masked_max(x, between_mask(head, tail))
    assert pooled.tolist() == [[8.0, 9.0], [0.0, 0.0], [0.0, 0.0]]


def test_multitask_loss_includes_transe():
    torch.manual_seed(0)
    exs = toy_examples()
    model, _, feat, _ = tiny_re("bert-multitask", exs)
    batch = re_batches(model, feat, exs, batch_size=8)(random.Random(0))[0]
    model.eval()
    with_transe = model.loss(batch).item()
    model.transe_weight = 0.0
    assert with_transe > model.loss(batch).item()


# --------------------------------------------------------------------------------- CLI
def test_cli_train_re_writes_checkpoint_and_metrics(tmp_path):
    from nere.train_commands import train

    data = tmp_path / "data"
    data.mkdir()
    exs = toy_examples()
    for split in ("train", "dev", "test"):
        write_jsonl(exs, data / f"{split}.jsonl")
    out = tmp_path / "ckpt"
    res = CliRunner().invoke(train, ["re", "--model", "bilstm", "--dataset", str(data), "--out", str(out),
                                     "--epochs", "1", "--quiet", "--neg-ratio", "1"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "re" and metrics["model"] == "bilstm" and metrics["neg_ratio"] == 1.0
    for key in ("accuracy", "macro_f1", "micro_f1", "precision", "recall", "f1"):
        assert key in metrics["test"]
    assert {"command", "hardware", "seconds", "dev", "history"} <= set(metrics)
    res = CliRunner().invoke(train, ["re", "--model", "nope", "--dataset", str(data), "--out", str(out)])
    assert res.exit_code != 0 and "nope" in res.output and "Traceback" not in res.output
