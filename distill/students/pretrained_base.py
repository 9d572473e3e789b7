"""The pretrained encoder an `init = "pretrained"` transformer student starts from, its `base`: an asset alias
(minilm-l6, mpnet-base), a Hugging Face id or a local model directory, read with its own tokenizer at its own width.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import UserError
from ..store import source_stamp

PROBE_TEXTS = 256   # training texts both tokenizers must encode alike before the teacher reads the student's tokens


def load_base(base: str, cache_root: str | None):
    """(tokenizer, sequence classifier) of `base`; an alias's archive (mpnet-base) is unpacked under `cache_root`."""
    from ..teacher import ALIASES, load_pretrained, resolve_model
    if not base:
        raise UserError(f'init = "pretrained" needs `base`: an alias ({", ".join(ALIASES)}), a Hugging Face id or a '
                        "local model directory")
    root = Path(cache_root) if cache_root else Path(tempfile.gettempdir()) / "mbtb-assets"
    return load_pretrained(resolve_model(base, root))


def base_files(base: str) -> list | None:
    """A local base directory's files as `store.source_stamp` stamps them (path, size, mtime), so a model saved
    again into the same directory retrains the students started from it; None for an alias or a Hugging Face id,
    whose name is what identifies the weights."""
    from ..teacher import ALIASES
    directory = Path(base).expanduser() if base else None
    if directory is None or base in ALIASES or not directory.is_dir():
        return None
    return [source_stamp(str(path)) for path in sorted(directory.rglob("*")) if path.is_file()]


def check_same_tokens(student_tokenizer, teacher_tokenizer, texts: list[str], max_length: int, base: str) -> None:
    """The hidden-state loss runs the teacher on the student's token ids, which only mean the same to both when
    their tokenizers agree: the same vocabulary, and the same ids for the first training texts."""
    def ids(tokenizer):
        return tokenizer(texts[:PROBE_TEXTS], truncation=True, max_length=max_length)["input_ids"]

    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab() or ids(student_tokenizer) != ids(
            teacher_tokenizer):
        raise UserError(f"hidden_weight > 0 feeds the student's tokens to the teacher, but base {base!r} tokenizes "
                        "text differently from the teacher; set hidden_weight = 0 for this student")
