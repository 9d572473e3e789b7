"""Shared fixtures: a tiny random-init BERT teacher and a tiny end-to-end run through the real pipeline."""
from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from distill.config import apply_overrides, load_profile
from distill.pipeline import Run

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(directory: Path, texts: list[str], num_labels: int = 2, vocab_size: int = 400) -> Path:
    """A 2-layer, 32-wide random-init BERT with a word-level vocab of the commonest words in `texts`."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    words = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    vocab = SPECIALS + [w for w, _ in words.most_common(vocab_size - len(SPECIALS))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


TINY_OVERRIDES = [
    "data.max_examples=300",
    "teacher.max_steps=6",
    "teacher.batch_size=16",
    "teacher.lr=1e-3",
    "students.bilstm.epochs=2",
    "students.bilstm.hidden=16",
    "eval.bootstrap=200",
    'labelling.backend="torch"',   # tiny_run and tests/test_labelling.py take the ONNX path
    # smoke's other transformer students start from the real MiniLM; tests/test_transformer_students.py has tiny ones
    'students.names=["tfidf_lr", "tfidf_ridge", "nb", "bilstm", "static"]',
    'ablation.students=["tfidf_lr", "tfidf_ridge", "nb", "bilstm", "static", "transformer"]',
    # the optional engines' backends, where installed, are exported by tests/test_engines.py alone
    'export.skip=["transformer/openvino", "transformer/openvino-bf16", "transformer/openvino-int8", '
    '"transformer/ctranslate2", "transformer/ctranslate2-int8"]',
]


def tiny_config(teacher_dir: Path, extra=()) -> dict:
    return apply_overrides(load_profile("smoke"), TINY_OVERRIDES + [f'teacher.model="{teacher_dir}"', *extra])


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and one thread keeps the suite steady on a busy machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mr_texts():
    from distill import data
    return data.load("mr")["text"].tolist()[:2000]


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, mr_texts) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), mr_texts)


@pytest.fixture(scope="session")
def sensitive_teacher(tmp_path_factory, tiny_teacher_dir) -> Path:
    """The tiny BERT re-initialised with initializer_range=0.3: its outputs vary from text to text (the default
    tiny teacher answers nearly the same for every sentence), so a broken export shows."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    directory = tmp_path_factory.mktemp("sensitive-bert")
    shutil.copytree(tiny_teacher_dir, directory, dirs_exist_ok=True)
    config = BertConfig.from_pretrained(directory)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_teacher_dir) -> Run:
    """A finished run of the real pipeline on 300 MR sentences with the tiny teacher (about 15 s)."""
    root = tmp_path_factory.mktemp("run")
    run = Run("tiny", tiny_config(tiny_teacher_dir, ['labelling.backend="auto"']), root / "artifacts", root / "reports",
              progress=False, log=lambda *_: None)
    run.all()
    return run


CLI_STUDENTS = "tfidf_lr,nb"


def cli_argv(root: Path, teacher, *extra, students=CLI_STUDENTS) -> list[str]:
    """`python -m distill` arguments for a tiny smoke run under `root` (later flags override earlier ones)."""
    args = ["--profile", "smoke", "--artifacts", str(root / "artifacts"), "--reports", str(root / "reports"),
            "--quiet", "--students", students, "--teacher", str(teacher)]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    return args + list(extra)


@pytest.fixture(scope="session")
def finished_cli_run(tmp_path_factory, tiny_teacher_dir) -> Path:
    """One finished CLI run (2 students x 2 modes); tests that rerun or break it work on a copy (`root`)."""
    from distill.cli import main
    root = tmp_path_factory.mktemp("cli-run")
    assert main(cli_argv(root, tiny_teacher_dir)) == 0
    return root


@pytest.fixture()
def root(finished_cli_run, tmp_path) -> Path:
    """A private copy of `finished_cli_run`."""
    shutil.copytree(finished_cli_run, tmp_path / "run", copy_function=shutil.copy2)
    return tmp_path / "run"
