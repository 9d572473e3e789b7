"""Run texts through the selected Predictors and compare each with the teacher: latency, speedup, cosine
similarity and KL divergence of the probabilities, and whether the predicted labels agree."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from distill.families.predictor import Predictor

EPS = 1e-12


class UnknownModels(ValueError):
    pass


def cosine(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, k) probability arrays."""
    norms = np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(q, axis=1), EPS)
    return (p * q).sum(axis=1) / norms


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || q) in nats, p being the teacher's probabilities."""
    p, q = np.clip(p, EPS, 1.0), np.clip(q, EPS, 1.0)
    return np.maximum((p * np.log(p / q)).sum(axis=1), 0.0)


def timed(predictor: Predictor, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """Probabilities and the median wall time (ms) of `repeats` end-to-end calls (tokenising included)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proba = predictor.predict_proba(texts)
        times.append((time.perf_counter() - started) * 1000)
    return np.asarray(proba, dtype=np.float64), statistics.median(times)


# A batch runs in chunks of this many texts, each taking one of its model's call slots, so a long batch lets other
# requests use the same model between chunks instead of waiting for the whole batch.
BATCH_CHUNK = 64
# Concurrent /predict requests for a model are answered by one batched call of at most this many texts.
MAX_MICRO_BATCH = 32


@dataclass(eq=False)   # slots are compared by identity: two requests may carry the same text
class _Slot:
    text: str
    repeats: int
    result: tuple | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class MicroBatcher:
    """Dynamic batching for one model: a request queues its text; whoever gets one of the model's call slots runs
    every queued text (up to MAX_MICRO_BATCH, same `repeats`) as one batch and hands each its row. Alone, a request
    runs at batch 1 as before; under load, one batched call replaces many single ones, paying a call's fixed cost
    once (1-2 ms of Python in a scikit-learn student; the ORT teacher on one thread costs the same per text at batch
    1 and 32). The latency reported is that batch's, and says how many texts shared it."""

    def __init__(self, predictor: Predictor, calls: threading.Semaphore, max_batch: int = MAX_MICRO_BATCH):
        self.predictor, self.calls, self.max_batch = predictor, calls, max_batch
        self._queue: list[_Slot] = []
        self._queue_lock = threading.Lock()

    def __call__(self, text: str, repeats: int) -> tuple[np.ndarray, float, int]:
        slot = _Slot(text, repeats)
        with self._queue_lock:
            self._queue.append(slot)
        while not slot.done.is_set():
            with self.calls:
                with self._queue_lock:
                    if slot not in self._queue:   # a batch that holds this text is running or has run
                        break
                    first = self._queue[0].repeats
                    batch = [s for s in self._queue if s.repeats == first][:self.max_batch]
                    self._queue = [s for s in self._queue if s not in batch]
                self._run(batch, first)
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run(self, batch: list[_Slot], repeats: int) -> None:
        try:
            proba, ms = timed(self.predictor, [s.text for s in batch], repeats)
            for i, s in enumerate(batch):
                s.result = (proba[i:i + 1], ms, len(batch))
        except Exception as exc:  # every request of the batch fails the way a lone one would
            for s in batch:
                s.error = exc
        finally:
            for s in batch:
                s.done.set()


class Engine:
    """The loaded predictors by name. The teacher (first of kind "teacher") always runs: it is the reference.

    Each model takes at most `concurrency` calls at once (its call slots): the server runs every call on
    `--threads` threads (1 by default), so with one slot per core a busy model, the reference teacher above all,
    keeps every core working, while the slots bound how many calls fight over the cores. Requests for different
    models, or for the same model between a batch's chunks, go on. Under concurrent load the latencies shown
    therefore include contention for the CPU; bench/ measures without it."""

    def __init__(self, predictors: list[Predictor], concurrency: int = 1):
        self.predictors = {p.name: p for p in predictors}
        self.teacher = next((p for p in predictors if p.kind == "teacher"), None)
        self._calls = {name: threading.BoundedSemaphore(concurrency) for name in self.predictors}
        self._batchers = {name: MicroBatcher(p, self._calls[name]) for name, p in self.predictors.items()}

    def _timed(self, predictor: Predictor, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
        with self._calls[predictor.name]:
            return timed(predictor, texts, repeats)

    def _timed_in_chunks(self, predictor: Predictor, texts: list[str]) -> tuple[np.ndarray, float]:
        parts = [self._timed(predictor, texts[i:i + BATCH_CHUNK], 1) for i in range(0, len(texts), BATCH_CHUNK)]
        return np.concatenate([proba for proba, _ in parts]), sum(ms for _, ms in parts)

    def select(self, names: list[str] | None) -> list[Predictor]:
        """The teacher first, then the named predictors (all when `names` is None) in load order."""
        if names is None:
            names = list(self.predictors)
        unknown = [n for n in names if n not in self.predictors]
        if unknown:
            raise UnknownModels(unknown)
        wanted = set(names)
        return [p for p in self.predictors.values() if p is self.teacher or p.name in wanted]

    def compare(self, text: str, names: list[str] | None, repeats: int) -> list[dict]:
        selected = self.select(names)
        outputs = {}
        for p in selected:   # load order: an ensemble comes after its members
            outputs[p.name] = composed(p, outputs) or self._batchers[p.name](text, repeats)
        reference = outputs.get(self.teacher.name) if self.teacher else None
        rows = []
        for p in selected:
            proba, ms, batch_size = outputs[p.name]
            row = {**describe(p), "label": p.labels[int(proba[0].argmax())],
                   "probabilities": [round(float(x), 6) for x in proba[0]], "latency_ms": round(ms, 3),
                   "batch_size": batch_size, "speedup": None, "cosine": None, "kl": None, "agrees": None}
            if reference is not None and reference[0].shape == proba.shape:
                ref_proba, ref_ms, _ = reference
                row.update(speedup=round(ref_ms / max(ms, 1e-6), 2),
                           cosine=round(float(cosine(ref_proba, proba)[0]), 6),
                           kl=round(float(kl_divergence(ref_proba, proba)[0]), 6),
                           agrees=bool(ref_proba[0].argmax() == proba[0].argmax()))
            rows.append(row)
        return rows

    def compare_batch(self, texts: list[str], gold: list[int] | None, names: list[str] | None) -> list[dict]:
        """Per model: accuracy on `gold` (when given), agreement with the teacher and the time of its batched calls
        (chunks of BATCH_CHUNK texts)."""
        selected = self.select(names)
        outputs = {}
        for p in selected:
            outputs[p.name] = composed(p, outputs) or self._timed_in_chunks(p, texts)
        reference = outputs.get(self.teacher.name) if self.teacher else None
        rows = []
        for p in selected:
            proba, ms = outputs[p.name]
            predicted = proba.argmax(axis=1)
            row = {**describe(p), "examples": len(texts),
                   "accuracy": round(float(np.mean(predicted == np.asarray(gold))), 6) if gold else None,
                   "total_ms": round(ms, 3), "ms_per_example": round(ms / len(texts), 4),
                   "speedup": None, "agreement": None, "mean_cosine": None, "mean_kl": None}
            if reference is not None and reference[0].shape == proba.shape:
                ref_proba, ref_ms = reference
                row.update(speedup=round(ref_ms / max(ms, 1e-6), 2),
                           agreement=round(float(np.mean(ref_proba.argmax(axis=1) == predicted)), 6),
                           mean_cosine=round(float(cosine(ref_proba, proba).mean()), 6),
                           mean_kl=round(float(kl_divergence(ref_proba, proba).mean()), 6))
            rows.append(row)
        return rows


def composed(predictor: Predictor, outputs: dict) -> tuple | None:
    """An ensemble whose members have all answered this request, from their answers (probabilities, ms, ...): the
    mean of their probabilities (what the ensemble computes) in the sum of their times (what running it costs), and
    the largest of any further fields (batch size), instead of running every member a second time. None when it is
    not an ensemble or a member has not answered."""
    members = getattr(predictor, "members", None)
    if not members or any(m.name not in outputs for m in members):
        return None
    answers = [outputs[m.name] for m in members]
    rest = [max(column) for column in zip(*(answer[2:] for answer in answers))]
    return (np.mean([answer[0] for answer in answers], axis=0), sum(answer[1] for answer in answers), *rest)


def describe(p: Predictor) -> dict:
    return {"name": p.name, "model": p.model, "backend": p.backend, "kind": p.kind}
