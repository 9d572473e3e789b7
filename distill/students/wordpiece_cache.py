"""Token ids of a BERT WordPiece tokenizer without the per-call cost of `Tokenizer.encode`, exactly.

A BERT tokenizer (BertNormalizer + BertPreTokenizer + WordPiece) tokenizes each word on its own, so the ids of a text
are the concatenation of its words' ids. For plain-ASCII text the normaliser and pre-tokenizer reduce to `lower()` and
one regular expression, and a word's ids can be memoised; `encode` spends most of its ~75 µs per sentence crossing into
Rust and building an `Encoding`. Anything else (non-ASCII, control characters, text that may hold an added token such
as `[UNK]`, a tokenizer of another kind) goes through `encode`, so the ids are always those of the tokenizer.
"""
from __future__ import annotations

import json
import re

# After lower(), an ASCII word is a run of letters and digits; every other printable ASCII character is BERT
# punctuation and a word of its own.
WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# Control characters (dropped by BertNormalizer; \t \n \r count as spaces) and "[", which could open an added token.
SLOW_PATH = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\[]")
MAX_CACHED_WORDS = 200_000


class WordPieceCache:
    """`ids(text)` = `tokenizer.encode(text, add_special_tokens=False).ids[:max_length]`."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.words: dict[str, list[int]] = {}

    @classmethod
    def supports(cls, tokenizer_json: str) -> bool:
        """True for a lowercasing BERT WordPiece tokenizer, the only kind whose fast path is the same tokenizer."""
        spec = json.loads(tokenizer_json)
        normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
        return (normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase")
                and normalizer.get("clean_text") and normalizer.get("strip_accents") in (None, True)
                and pre.get("type") == "BertPreTokenizer" and spec["model"].get("type") == "WordPiece"
                and all(token["content"].startswith("[") for token in spec.get("added_tokens", [])))

    def ids(self, text: str) -> list[int]:
        if not text.isascii() or SLOW_PATH.search(text):
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        out: list[int] = []
        for word in WORD.findall(text.lower()):
            word_ids = self.words.get(word)
            if word_ids is None:
                word_ids = self._tokenize_word(word)
            out += word_ids
            if len(out) >= self.max_length:
                return out[: self.max_length]
        return out

    def _tokenize_word(self, word: str) -> list[int]:
        if len(self.words) >= MAX_CACHED_WORDS:
            self.words.clear()
        word_ids = [token.id for token in self.tokenizer.model.tokenize(word)]
        self.words[word] = word_ids
        return word_ids
