"""The static student's fast tokenization (distill/students/wordpiece_cache.py) gives exactly the tokenizer's ids."""
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel, WordPiece

from distill.students.wordpiece_cache import WordPieceCache

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + ["the", "film", "is", "un", "##believ", "##able", "fun", "##ny", "a", "b", "c", "##s", "##ed",
                    "!", ",", ".", "'", "-", "é", "cafe", "日", "1", "##0"] + list(string.ascii_lowercase)
MAX_LENGTH = 12


def bert_tokenizer(max_length=MAX_LENGTH) -> Tokenizer:
    tokenizer = Tokenizer(WordPiece({w: i for i, w in enumerate(dict.fromkeys(VOCAB))}, unk_token="[UNK]",
                                    max_input_chars_per_word=20))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.enable_truncation(max_length)
    return tokenizer


# ASCII (controls included), accents, CJK, other scripts' punctuation and spaces, and pieces of special tokens.
ODD_CHARACTERS = list("éÉñ日本\u3000\u00a0\u2014«»")
TEXT = st.lists(st.one_of(st.characters(max_codepoint=0x7f), st.sampled_from(ODD_CHARACTERS),
                          st.sampled_from(["[UNK]", "[mask]", "[PAD]", "unbelievable", "Funny", "films", " "])),
                max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
@example("a\tb\nc\rd [UNK]un[mask] 10s")
def test_cached_ids_equal_the_tokenizers(text):
    tokenizer = bert_tokenizer()
    assert WordPieceCache(tokenizer, MAX_LENGTH).ids(text) == tokenizer.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("control", ["\x00", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f"])
def test_control_characters_that_bert_drops(control):
    """Python's \\s counts \\x0b, \\x0c and \\x1c-\\x1f as spaces; BERT's normaliser deletes them."""
    tokenizer, text = bert_tokenizer(), f"a{control}b fun{control}ny"
    assert WordPieceCache(tokenizer, MAX_LENGTH).ids(text) == tokenizer.encode(text, add_special_tokens=False).ids


def test_words_are_memoised_and_truncation_matches():
    tokenizer = bert_tokenizer()
    cache = WordPieceCache(tokenizer, MAX_LENGTH)
    text = "The film is UNBELIEVABLE, funny! " * 3
    ids = cache.ids(text)
    assert ids == tokenizer.encode(text, add_special_tokens=False).ids and len(ids) == MAX_LENGTH
    assert cache.words["unbelievable"] == [VOCAB.index("un"), VOCAB.index("##believ"), VOCAB.index("##able")]
    cache.words["film"] = [-1]   # a planted entry is used: the memo really is the path taken
    assert cache.ids("film") == [-1]


@pytest.mark.parametrize("make, supported", [
    (bert_tokenizer, True),
    (lambda: Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")), False),
])
def test_only_bert_wordpiece_tokenizers_take_the_fast_path(make, supported):
    assert WordPieceCache.supports(make().to_str()) is supported


def test_static_student_uses_the_cache_and_falls_back_without_it(tiny_teacher_dir, mr_texts):
    from distill.students.static import StaticEmbeddingClassifier
    student = StaticEmbeddingClassifier(teacher=str(tiny_teacher_dir), pca_dims=8, epochs=1, progress=False)
    student.fit(mr_texts[:60], [i % 2 for i in range(60)])
    assert student.word_cache is not None
    texts = mr_texts[60:120] + ["Café — naïve", "[MASK] it"]
    fast = student.token_ids(texts)
    student._word_cache = None
    slow = student.token_ids(texts)
    assert [list(a) for a in fast] == [list(b) for b in slow]
