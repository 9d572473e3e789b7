"""Augmentation (Tang et al. 2019 §3.3) and the teacher-labelled transfer-set stage."""
import numpy as np
import pandas as pd
import pytest

from distill import augment, transfer
from distill.chunked_labelling import label_in_chunks
from distill.errors import UserError

SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "The film is strictly routine and the plot never takes off.",
    "Boring.",
    "It's a charming and often affecting journey.",
    "...",
    "",
]
NEIGHBOURS = {"movie": ["film", "picture"], "film": ["movie"], "boring": ["dull", "tedious"], "plot": ["story"],
              "charming": ["delightful"], "routine": ["ordinary"]}


def test_same_seed_same_variants_other_seed_other_variants():
    first = augment.augment(SENTENCES, 8, NEIGHBOURS, seed=3)
    assert first == augment.augment(SENTENCES, 8, NEIGHBOURS, seed=3)
    assert first != augment.augment(SENTENCES, 8, NEIGHBOURS, seed=4)
    assert len(first) > 10


def test_variants_are_new_distinct_and_never_empty():
    out = augment.augment(SENTENCES * 3, 20, NEIGHBOURS, p_mask=0.5, p_ng=0.8, exclude=["film"])
    keys = [augment.normalise(v) for v in out]
    assert len(keys) == len(set(keys))
    assert not set(keys) & ({augment.normalise(s) for s in SENTENCES} | {"film"})
    for variant in out:
        assert any(augment.HAS_WORD.search(w) for w in variant.split() if w != "[MASK]"), variant


def test_everything_masked_gives_nothing_rather_than_empty_or_all_mask_text():
    assert augment.augment(SENTENCES, 5, NEIGHBOURS, p_mask=1.0, p_sub=0.0) == []


def test_word_level_probabilities_on_a_large_sample():
    tokens = ["good", "bad", "film", "plot"] * 5  # every word has neighbours, none of them in the sentence
    neighbours = {"good": ["fine", "great"], "bad": ["poor"], "film": ["movie", "picture"], "plot": ["story"]}
    rng = np.random.default_rng(0)
    variants = [augment.perturb(tokens, rng, neighbours, p_mask=0.1, p_sub=0.2, p_ng=0.0) for _ in range(5000)]
    total = 5000 * len(tokens)
    masked = sum(v.count("[MASK]") for v in variants) / total
    substituted = sum(w not in tokens and w != "[MASK]" for v in variants for w in v) / total
    assert masked == pytest.approx(0.1, abs=0.005)
    assert substituted == pytest.approx(0.2, abs=0.006)
    assert all(len(v) == len(tokens) for v in variants)


def test_ngram_probability_and_lengths_on_a_large_sample():
    tokens = [f"w{i}" for i in range(12)]
    rng = np.random.default_rng(1)
    variants = [augment.perturb(tokens, rng, {}, p_mask=0.0, p_sub=0.0, p_ng=0.25, max_ngram=5) for _ in range(8000)]
    cut = [v for v in variants if len(v) < len(tokens)]
    assert len(cut) / len(variants) == pytest.approx(0.25, abs=0.015)
    lengths = np.bincount([len(v) for v in cut], minlength=6)[1:6] / len(cut)
    assert np.allclose(lengths, 0.2, atol=0.03)  # n uniform in 1..5
    assert all(" ".join(v) in " ".join(tokens) for v in cut)  # contiguous n-grams of the sentence


def test_glove_neighbours_are_similar_common_words():
    found = augment.glove_neighbours(["film", "Boring", "zzzqqq"], top_k=5)
    assert "movie" in found["film"] and len(found["film"]) == 5 and "film" not in found["film"]
    assert "boring" in found and "zzzqqq" not in found


@pytest.mark.parametrize("kwargs, message", [({"p_mask": 1.5}, "p_mask"), ({"p_mask": 0.6, "p_sub": 0.6}, "at most 1"),
                                             ({"max_ngram": 0}, "max_ngram"), ({"n_iter": -1}, "n_iter")])
def test_bad_settings_are_one_line_user_errors(kwargs, message):
    settings = {"n_iter": 2, **kwargs}
    with pytest.raises(UserError, match=message):
        augment.augment(SENTENCES, **settings)


SPLIT = pd.DataFrame({"text": ["a fine film", "a dull film", "held out text", "test text"],
                      "label": [0, 1, 0, 1], "split": ["train", "train", "dev", "test"]})
CONFIG = {"n_iter": 3, "p_mask": 0.2, "p_sub": 0.0, "p_ng": 0.0, "max_ngram": 5, "top_k": 10, "glove_vocab": 20000,
          "max_size": 0, "unlabelled": "", "seed": 1}


def test_unlabelled_text_joins_without_duplicates_or_held_out_text(tmp_path):
    path = tmp_path / "extra.txt"
    path.write_text("a new review\n\n  a new review \nheld out text\na fine film\nanother one\n")
    frame = transfer.transfer_texts(SPLIT, {**CONFIG, "unlabelled": str(path)}, "[MASK]")
    extra = frame.loc[frame["source"] == "unlabelled", "text"].tolist()
    assert extra == ["a new review", "another one"]
    assert not set(frame["text"]) & set(SPLIT["text"])
    with pytest.raises(UserError, match="does not exist"):
        transfer.transfer_texts(SPLIT, {**CONFIG, "unlabelled": str(tmp_path / "missing.txt")}, "[MASK]")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(UserError, match="holds no text"):
        transfer.transfer_texts(SPLIT, {**CONFIG, "unlabelled": str(tmp_path / "blank.txt")}, "[MASK]")


def test_labelling_resumes_after_an_interrupt_losing_at_most_one_chunk(tmp_path):
    texts = [f"text {i}" for i in range(25)]
    calls, interrupt = [], True

    def label(chunk):
        calls.append(len(chunk))
        if interrupt and len(calls) == 3:
            raise KeyboardInterrupt
        return np.array([[float(t.split()[1]), 0.0] for t in chunk])

    with pytest.raises(KeyboardInterrupt):
        label_in_chunks(texts, label, tmp_path / "partial", "k1", chunk_size=10, progress=False)
    assert sorted(p.name for p in (tmp_path / "partial").glob("chunk-*")) == ["chunk-00000.npz", "chunk-00001.npz"]
    calls.clear()
    interrupt = False
    logits, seconds, reused = label_in_chunks(texts, label, tmp_path / "partial", "k1", 10, progress=False)
    assert calls == [5] and reused == 2  # only the unfinished last chunk is labelled again
    assert np.array_equal(logits[:, 0], np.arange(25)) and seconds >= 0
    calls.clear()
    label_in_chunks(texts, label, tmp_path / "partial", "k2", 10, progress=False)
    assert calls == [10, 10, 5]  # another stage key: the old chunks are not reused


def test_transfer_stage_labels_augmented_text_with_the_teacher(tiny_run):
    from distill import teacher as T

    tiny_run.build_transfer()
    frame = tiny_run.transfer_set()
    info = tiny_run.stage_info("transfer")
    train = tiny_run.split().query("split == 'train'")
    assert info["rows"] == len(frame) > 0.8 * len(train) and info["label_seconds"] > 0
    assert not (tiny_run.dir / ".transfer.partial").exists()
    assert not set(frame["text"]) & set(tiny_run.split()["text"])
    sample = frame["text"].tolist()[:20]
    label = tiny_run.labeller()
    # int8 quantises activations per batch, so its logits move with what a text is batched with (the labeller picks
    # int8 or fp32 by measured speed): same batches or not, fp32 agrees to 1e-4, int8 within the labelling tolerance
    atol = tiny_run.cfg["labelling"]["tolerance"] if label.backend == "onnx-int8" else 1e-4
    assert np.allclose(frame[["logit_0", "logit_1"]].to_numpy()[:20], label(sample), atol=atol)
    assert info["logits_source"] == tiny_run.logits_source()   # the labeller's choice, faithful within tolerance
    tokenizer, model = T.load_pretrained(str(tiny_run.teacher_dir()))
    expected = T.predict_logits(model, tokenizer, sample, tiny_run.cfg["teacher"]["max_length"], progress=False)
    mean_diff = np.abs(frame[["logit_0", "logit_1"]].to_numpy()[:20] - expected).mean()
    assert mean_diff <= tiny_run.cfg["labelling"]["tolerance"] * 2   # 20 texts, not the 256 it was validated on
