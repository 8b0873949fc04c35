"""CLIP byte-pair-encoding tokenizer, torch-free, with token ids identical to `open_clip.tokenize`.

This follows open_clip's `SimpleTokenizer` (itself OpenAI's, MIT licence) exactly: ftfy fix,
double HTML unescape, whitespace folding, lower-casing, the same pre-tokenisation regex (special
tokens included) and the same merge ranks from `bpe_simple_vocab_16e6.txt.gz`. Texts longer than
the context length are truncated the way open_clip does it: keep the first `context_length`
tokens and overwrite the last with the end-of-text token. Unlike open_clip it returns numpy and
reports which texts were truncated, so the service can say so.
"""

from __future__ import annotations

import gzip
import html
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
    def __init__(self, vocab_path: Path | str = DEFAULT_VOCAB_PATH, context_length: int = DEFAULT_CONTEXT_LENGTH):
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
        self._cache: dict[str, str] = {token: token for token in _SPECIAL_TOKENS}
        self._pattern = regex.compile(
            "|".join(_SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot_id = self._encoder[_SPECIAL_TOKENS[0]]
        self.eot_id = self._encoder[_SPECIAL_TOKENS[1]]
        self.vocab_size = len(self._encoder)

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
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
        result = " ".join(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without start/end tokens and without truncation."""
        ids: list[int] = []
        for piece in self._pattern.findall(clean_text(text)):
            mapped = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[bpe_token] for bpe_token in self._bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> TokenizedBatch:
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        truncated = []
        for row, text in enumerate(texts):
            tokens = [self.sot_id, *self.encode(text), self.eot_id]
            was_truncated = len(tokens) > self.context_length
            if was_truncated:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_id
            ids[row, : len(tokens)] = tokens
            truncated.append(was_truncated)
        return TokenizedBatch(ids=ids, truncated=tuple(truncated))
