"""Issue 12: property-based tests of the two places users type into, the config overrides and the CSV loader.
Whatever hypothesis generates, the result is either a valid value / data set or a `UserError` (one `error:` line,
exit 2 in the CLI), never another exception."""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill import data as datasets
from distill.config import apply_overrides, load_profile
from distill.errors import UserError

PROFILE = load_profile("default")
# The ranges distill/settings.py promises, by key name wherever the key appears; every other number is 0 or more.
POSITIVE = {"batch_size", "epochs", "lr", "max_length", "hidden", "temperature", "evals_per_epoch", "chunk_size",
            "bootstrap", "pca_dims", "top_k", "glove_vocab", "max_ngram", "C"}
FRACTIONS = {"warmup", "dropout", "p_mask", "p_sub", "p_ng", "weight_decay"}


def leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict):
            out += leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


KEYS = [key for key, _ in leaves(PROFILE)]
VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "[]", "[1, 2]", '["a"]', '"quoted"', "{}", "inf", "nan", "-0", "1e-9",
                     "0", "two", "", " ", "=", "[", '"']),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), raw=VALUES)
def test_any_override_is_a_typed_in_range_value_or_a_user_error(key, raw):
    try:
        cfg = apply_overrides(PROFILE, [f"{key}={raw}"])
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    node, default = cfg, dict(leaves(PROFILE))[key]
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else node
    value = node
    if isinstance(default, bool):
        assert isinstance(value, bool)
    elif isinstance(default, (int, float)):
        assert isinstance(value, type(default)) and not isinstance(value, bool)
        name = key.rsplit(".", 1)[-1]
        assert value >= 0   # NaN and infinity are refused too
        if name in POSITIVE:
            assert value > 0
        if name in FRACTIONS:
            assert 0 <= value <= 1
    else:
        assert isinstance(value, type(default))


@settings(max_examples=100, deadline=None)
@given(key=st.text(min_size=1, max_size=12).filter(lambda k: "=" not in k), raw=VALUES)
def test_unknown_keys_are_user_errors(key, raw):
    if key in KEYS:
        return
    with pytest.raises(UserError):
        apply_overrides(PROFILE, [f"{key}={raw}"])


LABELS = st.sampled_from(["pos", "neg", "neutral", "NaN", "nan", "NA", "", " ", "None", "null", "2", "²", "pos "])
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "NaN", "a,b", 'say "hi"', "line\nbreak", "é"]))


def load_rows(rows, delimiter=","):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        return datasets.load(str(path))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(TEXTS, LABELS), max_size=30), delimiter=st.sampled_from([",", ";", "\t"]))
def test_any_csv_loads_clean_or_is_a_user_error(rows, delimiter):
    try:
        df = load_rows(rows, delimiter)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert df["label"].nunique() >= 2
    assert (df["text"] != "").all()
    assert not df["label"].str.strip().str.lower().isin(datasets.MISSING_LABELS).any()  # "NaN" is no class
    assert not df["text"].duplicated().any()
    try:
        split, labels = datasets.make_split(df)
    except UserError:
        return
    assert set(split["split"]) <= {"train", "dev", "test"} and len(labels) == df["label"].nunique()


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=200))
def test_any_bytes_as_a_csv_load_or_are_a_user_error(blob):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.csv"
        path.write_bytes(blob)
        try:
            datasets.load(str(path))
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)


def test_missing_labels_are_left_out_and_counted(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,pos\nb,neg\nc,NaN\nd,\ne,N/A\n,pos\nf,pos\nf,neg\n")
    df = datasets.load(str(path))
    assert sorted(df["label"].unique()) == ["neg", "pos"]
    assert df.attrs["dropped"] == {"missing label": 3, "empty text": 1, "text seen with two labels": 2}


def test_non_utf8_csv_names_the_encoding(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9 cr\xe8me,pos\nbad,neg\n".encode("latin1"))
    with pytest.raises(UserError, match=r"is not UTF-8 text \(byte 0xe9.*iconv -f latin1"):
        datasets.load(str(path))


def test_directory_as_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is a directory; pass a CSV file"):
        datasets.load(str(tmp_path))
