"""Data augmentation for distillation (Tang et al. 2019, §3.3): many variants of each training sentence, for the
teacher to label, so a small student sees far more of the teacher's function than the labelled set alone shows.

For each sentence, `n_iter` times: walk the words; with probability `p_mask` replace the word by the mask token,
otherwise with probability `p_sub` replace it by a similar word; then, with probability `p_ng`, keep only a random
n-gram of the result (n uniform in 1..`max_ngram`). Variants are deduplicated (among themselves and against the
originals and any `exclude` text); a variant without a single word is dropped, so none is empty.

Similar words. Tang et al. swap a word for a random word of the same part of speech. A POS tagger needs model data
that this offline, pinned environment does not ship (NLTK's tagger and spaCy's models are separate downloads), while
GloVe 6B 50d is already an embedded asset (the BiLSTM's embeddings). So a word is swapped for one of its `top_k`
cosine nearest neighbours in GloVe, among the `vocab_size` most frequent alphabetic GloVe words (common words the
teacher's vocabulary knows). Neighbours mostly share the word's part of speech ("film" -> movie, documentary,
drama) and also its topic, which keeps variants closer to real sentences than a random same-POS word; they still
move the meaning (boring -> funny, slow -> fast), which is what gives the teacher new decisions to teach.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from .errors import UserError

WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
HAS_WORD = re.compile(r"\w")


def words(text: str) -> list[str]:
    """Words and punctuation marks; variants are written back joined by single spaces."""
    return WORD.findall(text)


def glove_neighbours(vocabulary: Iterable[str], top_k: int = 10, vocab_size: int = 20_000,
                     chunk: int = 2048) -> dict[str, list[str]]:
    """{word: its top_k cosine nearest GloVe neighbours} for the (lower-cased) words of `vocabulary` that are among
    the `vocab_size` most frequent alphabetic GloVe words; neighbours come from that same list."""
    from .students.bilstm import load_glove

    if top_k < 1 or vocab_size < 2:
        raise UserError(f"similar-word substitution needs top_k >= 1 and vocab_size >= 2, got {top_k}, {vocab_size}")
    glove_words, vectors = load_glove()
    rows = []
    for i, word in enumerate(glove_words):
        if word.isalpha():
            rows.append(i)
            if len(rows) == vocab_size:
                break
    common = [glove_words[i] for i in rows]
    unit = torch.from_numpy(np.asarray(vectors[rows], dtype=np.float32))
    unit = unit / (unit.norm(dim=1, keepdim=True) + 1e-8)
    position = {w: i for i, w in enumerate(common)}
    wanted = sorted({w.lower() for w in vocabulary} & position.keys())
    k = min(top_k, len(common) - 1)
    out = {}
    for start in range(0, len(wanted), chunk):
        batch = wanted[start:start + chunk]
        ids = torch.tensor([position[w] for w in batch])
        sims = unit[ids] @ unit.T
        sims[torch.arange(len(batch)), ids] = -torch.inf  # a word is not its own neighbour
        for word, row in zip(batch, sims.topk(k, dim=1).indices.tolist()):
            out[word] = [common[j] for j in row]
    return out


def check_probabilities(p_mask: float, p_sub: float, p_ng: float, max_ngram: int, n_iter: int) -> None:
    for name, p in (("p_mask", p_mask), ("p_sub", p_sub), ("p_ng", p_ng)):
        if not 0 <= p <= 1:
            raise UserError(f"transfer.{name} must be a probability in [0, 1], got {p}")
    if p_mask + p_sub > 1:
        raise UserError(f"transfer.p_mask + transfer.p_sub must be at most 1, got {p_mask + p_sub}")
    if max_ngram < 1:
        raise UserError(f"transfer.max_ngram must be at least 1, got {max_ngram}")
    if n_iter < 0:
        raise UserError(f"transfer.n_iter must be 0 or more, got {n_iter}")


def perturb(tokens: Sequence[str], rng: np.random.Generator, neighbours: Mapping[str, Sequence[str]],
            p_mask=0.1, p_sub=0.1, p_ng=0.25, max_ngram=5, mask_token="[MASK]") -> list[str]:
    """One variant of `tokens` (see the module docstring). A word without neighbours is never substituted."""
    draws = rng.random(len(tokens))
    out = []
    for token, u in zip(tokens, draws):
        if u < p_mask:
            out.append(mask_token)
        elif u < p_mask + p_sub and (similar := neighbours.get(token.lower())):
            out.append(similar[rng.integers(len(similar))])
        else:
            out.append(token)
    if out and rng.random() < p_ng:
        n = int(rng.integers(1, max_ngram + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start:start + n]
    return out


def augment(texts: Iterable[str], n_iter: int, neighbours: Mapping[str, Sequence[str]] | None = None,
            p_mask=0.1, p_sub=0.1, p_ng=0.25, max_ngram=5, mask_token="[MASK]", seed=13,
            exclude: Iterable[str] = ()) -> list[str]:
    """Up to `n_iter` new, distinct, non-empty variants per text, in input order; the same under the same seed."""
    check_probabilities(p_mask, p_sub, p_ng, max_ngram, n_iter)
    neighbours = neighbours or {}
    rng = np.random.default_rng(seed)
    texts = list(texts)
    seen = {normalise(t) for t in texts} | {normalise(t) for t in exclude}
    out = []
    for text in texts:
        tokens = words(text)
        if not tokens:
            continue
        for _ in range(n_iter):
            variant = perturb(tokens, rng, neighbours, p_mask, p_sub, p_ng, max_ngram, mask_token)
            if not any(HAS_WORD.search(t) for t in variant if t != mask_token):
                continue
            joined = " ".join(variant)
            key = normalise(joined)
            if key not in seen:
                seen.add(key)
                out.append(joined)
    return out


def normalise(text: str) -> str:
    """The form used to spot duplicates: lower case, words and punctuation split the same way."""
    return " ".join(words(text.lower()))
