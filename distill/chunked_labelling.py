"""Labelling in this process, resumably: chunks of text labelled one after another, each saved as it finishes, so an
interrupted stage loses at most the chunk in flight (the Ray counterpart, shard by shard: distill/ray_labelling.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_path
from .config import fingerprint
from .errors import UserError
from .store import open_partial


def label_in_chunks(texts: list[str], label, partial: Path, key: str, chunk_size: int, progress=True):
    """`label(texts) -> logits`, chunk by chunk; each finished chunk is saved under `partial` (for this `key` and
    these texts) and reused by a later call. Returns (logits, seconds spent labelling, chunks reused)."""
    if chunk_size < 1:
        raise UserError(f"transfer.chunk_size must be at least 1, got {chunk_size}")
    open_partial(partial, {"key": key, "texts": fingerprint(texts), "chunk_size": chunk_size})
    parts, seconds, reused = [], 0.0, 0
    bar = tqdm(total=len(texts), desc="transfer labels", unit="text", disable=not progress)
    for number, start in enumerate(range(0, len(texts), chunk_size)):
        chunk = texts[start:start + chunk_size]
        path = partial / f"chunk-{number:05d}.npz"
        saved = _load_chunk(path, len(chunk))
        if saved is None:
            started = time.time()
            logits = np.asarray(label(chunk), dtype=np.float32)
            saved = (logits, time.time() - started)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, logits=logits, seconds=saved[1])
        else:
            reused += 1
        parts.append(saved[0])
        seconds += saved[1]
        bar.update(len(chunk))
        bar.set_postfix(texts_per_s=f"{(start + len(chunk)) / max(seconds, 1e-9):.0f}")
    bar.close()
    return np.concatenate(parts), seconds, reused


def _load_chunk(path: Path, rows: int):
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            logits, seconds = saved["logits"], float(saved["seconds"])
    except Exception:  # a chunk cut short by a crash: label it again
        return None
    return (logits, seconds) if len(logits) == rows else None
