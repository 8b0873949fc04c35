import numpy as np
import open_clip
import pytest

from inference_code.tokenizer import ClipTokenizer

EXTRA = [
    "",
    " ",
    "\u200b zero width \u200b",
    "\u00a0non-breaking\u00a0spaces",
    "CamelCaseWords and snake_case_words",
    "&lt;&gt;&amp;&#x1F600;",
    "🐶" * 80,
    "a " * 74,  # 74 words + start + end = 76 tokens: fits
    "a " * 75,  # exactly 77 tokens: fits, no truncation
    "a " * 76,  # 78 tokens: truncated, end token kept
]


@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer()


def test_token_ids_equal_open_clip(tokenizer, probe_texts):
    corpus = probe_texts + EXTRA
    ours = tokenizer(corpus)
    reference = open_clip.tokenize(corpus).numpy()
    mismatched = [text for text, a, b in zip(corpus, ours.ids, reference) if not np.array_equal(a, b)]
    assert not mismatched, mismatched
    assert ours.ids.dtype == np.int64 and ours.ids.shape == (len(corpus), 77)


def test_truncation_keeps_end_token_and_is_reported(tokenizer):
    batch = tokenizer(["a " * 74, "a " * 75, "a " * 76, "word " * 200])
    assert batch.truncated == (False, False, True, True)
    for row in batch.ids[2:]:
        assert row[-1] == tokenizer.eot_id
        assert np.count_nonzero(row) == 77
    assert batch.ids[1][76] == tokenizer.eot_id  # exactly fits: end token is its own, nothing cut


def test_empty_text_is_start_and_end_only(tokenizer):
    row = tokenizer([""]).ids[0]
    assert list(row[:3]) == [tokenizer.sot_id, tokenizer.eot_id, 0]
