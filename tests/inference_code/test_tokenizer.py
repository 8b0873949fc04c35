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


# Hostile input (issue 13): texts the request limits admit (10,000 characters) built to be the
# slowest to tokenise. The reference BPE is quadratic in one word's length (a 10,000-letter random
# word took seconds); ours must give the same ids. Timings live in bench_tokenizer.py, not here.
def worst_case_texts() -> dict[str, str]:
    import random
    import string

    rng = random.Random(13)
    return {
        "random latin word": "".join(rng.choice(string.ascii_lowercase) for _ in range(10_000)),
        "random latin word with accents": "".join(rng.choice("abcdeéèàçüöß") for _ in range(10_000)),
        "cjk word": "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(10_000)),
        "cyrillic word": "".join(chr(rng.randint(0x430, 0x44F)) for _ in range(10_000)),
        "greek word": "".join(chr(rng.randint(0x3B1, 0x3C9)) for _ in range(10_000)),
        "mixed scripts": "".join(rng.choice(["a", "я", "中", "é", "ß", "ا", "ש", "अ"]) for _ in range(10_000)),
        "one letter repeated": "a" * 10_000,
        "two letters repeated": "ab" * 5_000,
        "emoji run": "🐶" * 10_000,
        "mixed emoji run": "".join(rng.choice("🐶🐱🦊👍🏽🇫🇷❤️") for _ in range(10_000))[:10_000],
        "repeated punctuation": "!?" * 5_000,
        "random punctuation": "".join(rng.choice(string.punctuation) for _ in range(10_000)),
        "many short words": " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(4)) for _ in range(2_000))[:10_000],
        "words then a long word": "a dog " * 10 + "".join(rng.choice(string.ascii_lowercase) for _ in range(9_000)),
        "digits": "".join(rng.choice(string.digits) for _ in range(10_000)),
    }


def test_token_ids_equal_open_clip_on_worst_cases(tokenizer):
    cases = worst_case_texts()
    assert all(len(text) <= 10_000 for text in cases.values())
    ours = tokenizer(list(cases.values()))
    reference = open_clip.tokenize(list(cases.values())).numpy()
    mismatched = [name for name, a, b in zip(cases, ours.ids, reference) if not np.array_equal(a, b)]
    assert not mismatched, mismatched
    assert all(ours.truncated)


def test_heap_bpe_is_the_reference_bpe_on_random_words(tokenizer):
    """Full words, not only their first 77 tokens: small alphabets force overlapping pairs
    ('aaa', 'abab') and long merge chains; large ones exercise rare merges."""
    import random

    assert tokenizer.heap_bpe_exact  # CLIP's vocabulary meets the condition: the fast path is on
    rng = random.Random(7)
    byte_encoder = tokenizer._byte_encoder
    alphabets = ["a", "ab", "abc", "the", "aeiou", "qxz", "etaoinshrdlu", "абв", "中文字", "🐶🐱", "!?.", "abcdefghijklmnopqrstuvwxyz"]
    for _ in range(600):
        alphabet = rng.choice(alphabets)
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        mapped = "".join(byte_encoder[b] for b in word.encode("utf-8"))
        assert tokenizer._bpe_heap(mapped) == tokenizer._bpe_reference(mapped), word


def test_rank_monotonicity_check_can_fail():
    from inference_code.tokenizer import merges_are_rank_monotone

    assert merges_are_rank_monotone([("a", "b"), ("ab", "c")])
    assert not merges_are_rank_monotone([("ab", "c"), ("a", "b")])  # operand created after use
    assert not merges_are_rank_monotone([("a", "bc"), ("b", "c"), ("ab", "c")])  # 'abc' created twice


def test_stopping_at_the_context_does_not_change_ids(tokenizer):
    text = " ".join(f"word{i}" for i in range(300))
    full = tokenizer.encode(text)
    assert len(full) > 76
    assert tokenizer.encode(text, max_tokens=76) == full[:76]
    assert tokenizer.encode("a dog", max_tokens=76) == tokenizer.encode("a dog")


def test_bpe_cache_is_bounded():
    import random

    small = ClipTokenizer(cache_size=50, cache_word_chars=20)
    rng = random.Random(3)
    texts = [" ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 40))) for _ in range(70)) for _ in range(20)]
    before = small(texts).ids
    assert small.cache_len() <= 50
    assert all(len(word) <= 20 for word in small._cache)
    assert np.array_equal(small(texts).ids, before)  # evictions change nothing
    default = ClipTokenizer()
    default(["".join(rng.choice("abcdefghij") for _ in range(5_000))])
    assert default.cache_len() == 0  # a long word is not kept


def test_worst_case_batch_takes_well_under_a_second_per_text(tokenizer):
    """A generous sanity bound, not a benchmark (bench_tokenizer.py measures): eight distinct
    10,000-letter random words took 2-5 s each with the quadratic BPE, about 20 ms with ours."""
    import random
    import string
    import time

    rng = random.Random(11)
    texts = ["".join(rng.choice(string.ascii_lowercase) for _ in range(10_000)) for _ in range(8)]
    started = time.perf_counter()
    tokenizer(texts)
    assert time.perf_counter() - started < 8.0
