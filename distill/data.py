"""Labelled text-classification data: loaders for MR, BBC News, any CSV and Hugging Face data sets, and a fixed split.

Every loader returns a DataFrame with columns `text` (str) and `label` (str); `make_split` turns that into the
saved split (columns text, label as int, split in {train, dev, test}) that every later stage and benchmark reads.
"""
from __future__ import annotations

import bz2
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from . import assets
from .errors import UserError

MAX_CHARS = 20_000  # longer documents are cut: no sentence classifier reads further


def load_mr() -> pd.DataFrame:
    """Rotten Tomatoes snippets labelled fresh/rotten (the MR polarity set, Pang & Lee 2005)."""
    with bz2.open(assets.mr_csv(), "rt", encoding="utf-8") as f:
        raw = pd.read_csv(f, usecols=["category", "text"])
    raw = raw[raw["category"].isin(["fresh", "rotten"])]
    df = pd.DataFrame({"text": raw["text"].astype(str).str.strip(), "label": raw["category"]})
    return df


def load_bbc() -> pd.DataFrame:
    """BBC News, 2,225 articles in 5 classes; the label is the folder name."""
    rows = []
    for folder in sorted(p for p in assets.bbc_dir().iterdir() if p.is_dir()):
        for doc in sorted(folder.glob("*.txt")):
            text = doc.read_bytes().decode("utf-8", errors="replace")
            rows.append((" ".join(text.split()), folder.name))
    return pd.DataFrame(rows, columns=["text", "label"])


def load_csv(path: str | Path, text_col: str, label_col: str) -> pd.DataFrame:
    return _pick_columns(_read_csv(Path(path), "--data"), text_col, label_col, str(path))


def read_csv_column(path: str | Path, column: str) -> list[str]:
    """One column of a CSV as text (unlabelled in-domain text for the transfer set)."""
    raw = _read_csv(Path(path), "--unlabelled")
    if column not in raw.columns:
        raise UserError(f"{path} has no column {column!r} (columns: {', '.join(map(str, raw.columns))}); name "
                        "the right one with --set transfer.unlabelled_col=...")
    return raw[column].astype(str).tolist()


def _read_csv(path: Path, flag: str) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"data file {path} does not exist; pass an existing CSV with {flag}")
    if path.is_dir():
        raise UserError(f"{path} is a directory; pass a CSV file with {flag}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; it needs a header row and labelled rows") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#x} at position {exc.start}); "
                        f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > utf8.csv`") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable CSV ({first}); check quoting and the delimiter") from None
    return raw


def load_hf(name: str, text_col: str, label_col: str) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise UserError("Hugging Face data sets need the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name)
    except Exception as exc:  # offline, unknown name, gated: all surface as one clear line
        raise UserError(f"could not load Hugging Face data set {name!r} ({type(exc).__name__}); "
                        "check the name and that this machine is online") from None
    frames = [split.to_pandas() for split in ds.values()]
    raw = pd.concat(frames, ignore_index=True)
    features = next(iter(ds.values())).features
    if label_col in raw and hasattr(features.get(label_col), "names"):
        names = features[label_col].names
        raw[label_col] = raw[label_col].map(lambda i: names[i])
    return _pick_columns(raw.astype({c: str for c in raw.columns if c in (text_col, label_col)}),
                         text_col, label_col, name)


def _pick_columns(raw: pd.DataFrame, text_col: str, label_col: str, source: str) -> pd.DataFrame:
    for col, flag in ((text_col, "--text-col"), (label_col, "--label-col")):
        if col not in raw.columns:
            raise UserError(f"{source} has no column {col!r} (columns: {', '.join(map(str, raw.columns))}); "
                            f"name the right one with {flag}")
    return pd.DataFrame({"text": raw[text_col].astype(str).str.strip(), "label": raw[label_col].astype(str)})


# Labels that mean "no label" (what pandas, R and spreadsheets write for a missing value), compared lower-cased.
MISSING_LABELS = {"", "nan", "na", "n/a", "null", "none", "<na>"}


def load(name: str, text_col: str = "text", label_col: str = "label") -> pd.DataFrame:
    """Load a data set by name (`mr`, `bbc`, `hf:<name>`) or CSV path, cleaned: no empty text, no missing label
    (MISSING_LABELS), no duplicates. `df.attrs["dropped"]` counts the rows left out and why."""
    if name == "mr":
        df = load_mr()
    elif name == "bbc":
        df = load_bbc()
    elif name.startswith("hf:"):
        df = load_hf(name[3:], text_col, label_col)
    elif name.lower().endswith(".csv") or Path(name).exists():
        df = load_csv(name, text_col, label_col)
    else:
        raise UserError(f"unknown data set {name!r}; use mr, bbc, a path to a .csv file, or hf:<dataset name>")
    no_label = df["label"].str.strip().str.lower().isin(MISSING_LABELS)
    no_text = df["text"] == ""
    dropped = {"missing label": int(no_label.sum()), "empty text": int((no_text & ~no_label).sum())}
    df = df[~no_text & ~no_label]
    df = df.drop_duplicates(subset=["text", "label"])
    before = len(df)
    df = df.drop_duplicates(subset="text", keep=False)  # a text seen with two different labels is dropped
    dropped["text seen with two labels"] = before - len(df)
    df = df.assign(text=df["text"].str.slice(0, MAX_CHARS))
    if df.empty:
        raise UserError(f"data set {name!r} has no labelled rows with text")
    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise UserError(f"data set {name!r} has only one class ({counts.index[0]!r}); classification needs two or more")
    df = df.reset_index(drop=True)
    df.attrs["dropped"] = {why: n for why, n in dropped.items() if n}
    return df


def make_split(df: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = 13, max_examples: int = 0):
    """Stratified train/dev/test split with a fixed seed. Returns (split DataFrame, label names)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise UserError(f"data.split must be three positive fractions summing to 1, got {list(fractions)}")
    labels = sorted(df["label"].unique())
    df = df.assign(label=df["label"].map({name: i for i, name in enumerate(labels)}).astype(int))
    if max_examples and max_examples < len(df):
        df, _ = train_test_split(df, train_size=max_examples, stratify=df["label"], random_state=seed)
    counts = df["label"].value_counts()
    if counts.min() < 3:
        raise UserError(f"class {labels[counts.idxmin()]!r} has {counts.min()} example(s); "
                        "each class needs at least 3 to be split into train/dev/test")
    train, rest = train_test_split(df, train_size=fractions[0], stratify=df["label"], random_state=seed)
    dev_share = fractions[1] / (fractions[1] + fractions[2])
    dev, test = train_test_split(rest, train_size=dev_share, stratify=rest["label"], random_state=seed)
    out = pd.concat([train.assign(split="train"), dev.assign(split="dev"), test.assign(split="test")])
    return out.reset_index(drop=True)[["text", "label", "split"]], labels


def texts_labels(split_df: pd.DataFrame, part: str) -> tuple[list[str], np.ndarray]:
    rows = split_df[split_df["split"] == part]
    return rows["text"].tolist(), rows["label"].to_numpy()
