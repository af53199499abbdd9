"""CoNLL04 as running text (``conll04-prose``): layout rules and gold offsets."""
from __future__ import annotations

import re

import pytest

from nere.train.datasets import DATASETS, DatasetNotFoundError, load_dataset, load_stats
from nere.train.datasets.conll04 import Form, prose_offsets, token_offsets


def _prose(tokens: str) -> str:
    text, offsets = prose_offsets(tokens.split(" "))
    assert [text[s:e] for s, e in offsets.tolist()] == tokens.split(" ")  # tokens unchanged, offsets exact
    return text


@pytest.mark.parametrize("tokens, prose", [
    ("He was born in Austin , Texas .", "He was born in Austin, Texas."),
    ("Lucille Ball 's career : 1911", "Lucille Ball's career: 1911"),
    ("Booth wasn 't a shiftless actor ; he can 't", "Booth wasn't a shiftless actor; he can't"),
    ("Charles Guiteau ( Jonathan Hadary ) prances", "Charles Guiteau (Jonathan Hadary) prances"),
    ("` ` I 'm delighted , ' ' said Peter Butler", "``I'm delighted,'' said Peter Butler"),
    ("Newspaper ` Explains ' U.S. Interests", "Newspaper `Explains' U.S. Interests"),
    ('The viewers of " JFK " and " The Men " never', 'The viewers of "JFK" and "The Men" never'),
    ("submerge 150 , 000 hectares ( 370 , 500 acres )", "submerge 150,000 hectares (370,500 acres)"),
    ("On Oct. 15 , 1979 , in Livingston", "On Oct. 15, 1979, in Livingston"),
    ("Is it ? Yes !", "Is it? Yes!"),
    ("pandas ' near extinction", "pandas' near extinction"),
])
def test_tokens_laid_out_as_prose(tokens, prose):
    assert _prose(tokens) == prose


def test_token_form_is_unchanged():
    tokens = ["Acme", "Corp.", ",", "Texas"]
    assert token_offsets(tokens).tolist() == [[0, 4], [5, 10], [11, 12], [13, 18]]
    with pytest.raises(ValueError, match="form must be one of tokens, prose"):
        Form("sentences")


def _both(split: str):
    try:
        return load_dataset("conll04", split), load_dataset("conll04-prose", split)
    except DatasetNotFoundError:
        pytest.skip("CoNLL04 not available")


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_prose_gold_spans_map_to_the_new_offsets(split):
    """Same sentences, entities and relations; every gold span slices its text, and its
    text is the token form's entity text with the spaces laid out as prose."""
    tokens, prose = _both(split)
    assert len(tokens) == len(prose)
    for a, b in zip(tokens, prose):
        assert a.id == b.id and a.relations == b.relations
        assert [e.label for e in a.entities] == [e.label for e in b.entities]
        assert re.sub(r"\s", "", a.text) == re.sub(r"\s", "", b.text)
        assert len(b.text) <= len(a.text)
        for x, y in zip(a.entities, b.entities):
            gold, mapped = a.text[x.start:x.end], b.text[y.start:y.end]
            assert mapped == _prose(gold)
            assert mapped.replace(" ", "") == gold.replace(" ", "")
            assert not mapped[0].isspace() and not mapped[-1].isspace()
    assert load_stats("conll04-prose", split).counts == load_stats("conll04", split).counts


def test_prose_is_a_registered_dataset():
    assert "conll04-prose" in DATASETS
    _, prose = _both("dev")
    assert prose[0].id.startswith("conll04/dev/")
    assert load_dataset("conll04-prose", "dev", limit=3) == prose[:3]
