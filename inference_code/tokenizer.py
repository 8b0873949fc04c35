"""CLIP byte-pair-encoding tokenizer, torch-free, with token ids identical to `open_clip.tokenize`.

This follows open_clip's `SimpleTokenizer` (itself OpenAI's, MIT licence) exactly: ftfy fix,
double HTML unescape, whitespace folding, lower-casing, the same pre-tokenisation regex (special
tokens included) and the same merge ranks from `bpe_simple_vocab_16e6.txt.gz`. Texts longer than
the context length are truncated the way open_clip does it: keep the first `context_length`
tokens and overwrite the last with the end-of-text token. Unlike open_clip it returns numpy and
reports which texts were truncated, so the service can say so.

Bounded work per text (hostile input: one 10,000-letter "word" took 4.6 s with the reference BPE,
which is quadratic in the word's length, and its cache grew without bound):
- BPE runs with a heap of candidate pairs, O(n log n) in the word's length instead of O(n^2). It
  is the same algorithm, not an approximation: the reference merges, in rank order, every
  occurrence of the lowest-ranked pair from left to right; the heap pops (rank, position) in the
  same order. The two agree when every merge's operands were created by lower-ranked merges and
  no token is created twice, so a merge never creates a pair ranked below itself. The
  constructor checks that on the vocabulary (true of CLIP's) and falls back to the reference
  algorithm otherwise; `tests/inference_code/test_tokenizer.py` compares both on random words.
- Tokenisation stops once the context is full: open_clip keeps the first `context_length - 2`
  content tokens (the end token overwrites the last slot), and one more tells that the text was
  truncated, so words past that point cannot change the ids.
- The BPE cache is an LRU of `cache_size` entries holding words of at most `cache_word_chars`
  characters, so its memory is bounded whatever the traffic.
"""

from __future__ import annotations

import gzip
import heapq
import html
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex

DEFAULT_VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
DEFAULT_CONTEXT_LENGTH = 77
_N_MERGES = 49152 - 256 - 2
_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
DEFAULT_CACHE_SIZE = 4096
DEFAULT_CACHE_WORD_CHARS = 64


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Reversible map from utf-8 bytes to printable unicode characters (OpenAI's table)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy, HTML unescape twice, fold whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


@dataclass(frozen=True)
class TokenizedBatch:
    ids: np.ndarray  # int64, shape (batch, context_length), zero padded
    truncated: tuple[bool, ...]


class ClipTokenizer:
    def __init__(
        self,
        vocab_path: Path | str = DEFAULT_VOCAB_PATH,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_word_chars: int = DEFAULT_CACHE_WORD_CHARS,
    ):
        self.context_length = context_length
        self._byte_encoder = _bytes_to_unicode()
        lines = gzip.open(vocab_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
        vocab = list(self._byte_encoder.values())
        vocab += [token + "</w>" for token in vocab]
        vocab += ["".join(merge) for merge in merges]
        vocab += list(_SPECIAL_TOKENS)
        self._encoder = {token: index for index, token in enumerate(vocab)}
        self._bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.heap_bpe_exact = merges_are_rank_monotone(merges)
        self.cache_size = cache_size
        self.cache_word_chars = cache_word_chars
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pattern = regex.compile(
            "|".join(_SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot_id = self._encoder[_SPECIAL_TOKENS[0]]
        self.eot_id = self._encoder[_SPECIAL_TOKENS[1]]
        self.vocab_size = len(self._encoder)

    def cache_len(self) -> int:
        return len(self._cache)

    def _bpe(self, token: str) -> str:
        if token in _SPECIAL_TOKENS:
            return token
        with self._cache_lock:  # requests are tokenised on several threads
            cached = self._cache.get(token)
            if cached is not None:
                self._cache.move_to_end(token)
                return cached
        result = self._bpe_heap(token) if self.heap_bpe_exact else self._bpe_reference(token)
        if len(token) <= self.cache_word_chars and self.cache_size > 0:
            with self._cache_lock:
                self._cache[token] = result
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return result

    def _bpe_reference(self, token: str) -> str:
        """OpenAI's BPE as open_clip runs it: quadratic in the word's length."""
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda pair: self._bpe_ranks.get(pair, float("inf")))
            if bigram not in self._bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return " ".join(word)

    def _bpe_heap(self, token: str) -> str:
        """The same merges in the same order, O(n log n): a heap of (rank, position) candidates
        over a linked list of symbols. A position is the index of a symbol's first character,
        so heap order within one rank is left to right, as in the reference's scan."""
        symbols: list[str | None] = list(token[:-1]) + [token[-1] + "</w>"]
        n = len(symbols)
        if n == 1:
            return symbols[0]
        ranks = self._bpe_ranks
        nxt = list(range(1, n + 1))  # n: no next symbol
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None:
                heap.append((rank, i, symbols[i], symbols[i + 1]))
        heapq.heapify(heap)
        while heap:
            rank, i, first, second = heapq.heappop(heap)
            j = nxt[i]
            if symbols[i] != first or j >= n or symbols[j] != second:
                continue  # stale: one side has been merged since this pair was pushed
            merged = first + second
            symbols[i] = merged
            symbols[j] = None
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
                new_rank = ranks.get((merged, symbols[k]))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, i, merged, symbols[k]))
            p = prv[i]
            if p >= 0:
                new_rank = ranks.get((symbols[p], merged))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, p, symbols[p], merged))
        out = []
        i = 0
        while i < n:
            out.append(symbols[i])
            i = nxt[i]
        return " ".join(out)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of `text` without start/end tokens; with `max_tokens`, stop once that many are
        known (the first `max_tokens` ids are the same either way)."""
        ids: list[int] = []
        for match in self._pattern.finditer(clean_text(text)):
            if max_tokens is not None and len(ids) >= max_tokens:
                break
            mapped = "".join(self._byte_encoder[b] for b in match.group().encode("utf-8"))
            ids.extend(self._encoder[bpe_token] for bpe_token in self._bpe(mapped).split(" "))
        return ids if max_tokens is None else ids[:max_tokens]

    def __call__(self, texts: list[str]) -> TokenizedBatch:
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        truncated = []
        for row, text in enumerate(texts):
            # context_length - 2 content tokens fit beside start and end; one more means truncation
            tokens = [self.sot_id, *self.encode(text, max_tokens=self.context_length - 1), self.eot_id]
            was_truncated = len(tokens) > self.context_length
            if was_truncated:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_id
            ids[row, : len(tokens)] = tokens
            truncated.append(was_truncated)
        return TokenizedBatch(ids=ids, truncated=tuple(truncated))


def merges_are_rank_monotone(merges: list[tuple[str, str]]) -> bool:
    """True when no token is created by two merges and every merge's operands that are merge
    products were created by lower-ranked merges: then merging never creates a pair ranked below
    the merge just made, and the heap BPE visits merges in exactly the reference's order."""
    created: dict[str, int] = {}
    for rank, (first, second) in enumerate(merges):
        token = first + second
        if token in created:
            return False
        created[token] = rank
    return all(created.get(part, -1) < rank for rank, merge in enumerate(merges) for part in merge)
