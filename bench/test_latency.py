"""Latency of every (model, backend) x batch size x mode, with pytest-benchmark.

mode `e2e`: raw text in, probabilities out (tokenising/vectorising included).
mode `prepare`: the text work alone (tokenising, vectorising): what `e2e` spends before the model.
mode `model`: the model alone, on input prepared beforehand.
`test_harness_overhead` times a Predictor around a model that does nothing, through the same timing path: what the
harness itself adds to every case. `test_reference_again` times the teacher in PyTorch eager, the denominator of
every speedup, a second time at the end.
"""
import os
from dataclasses import dataclass

import numpy as np

from distill.families.predictor import Predictor

from .ab_worker import plant_factor, planted
from .guard import guarded, guarded_benchmark, guarded_rounds
from .results import REFERENCE

# What the export recorded about each variant, carried into bench.json beside its timings.
FACTS = ("accuracy", "ci_low", "ci_high", "agreement", "cosine_to_teacher", "max_abs_diff", "size_bytes", "params")


def timed_call(pred, texts, mode):
    """What a case times: (function, its argument)."""
    fn, arg = {"e2e": (pred.predict_proba, texts), "prepare": (pred.prepare, texts),
               "model": (pred.run, pred.prepare(texts))}[mode]
    # BENCH_PLANT_SLOWDOWN="model/backend=2" makes that variant do its work twice: how tests prove the gate bites.
    return planted(fn, plant_factor(os.environ.get("BENCH_PLANT_SLOWDOWN", ""), pred.name)), arg


@guarded
def test_latency(benchmark, bench_context, variant, batch_size, mode):
    pred, rss_mb = bench_context.predictor(variant)
    fn, arg = timed_call(pred, bench_context.batch(batch_size), mode)
    benchmark.group = f"batch {batch_size:>3} {mode}"
    config = bench_context.config
    measured = guarded_benchmark(benchmark, fn, arg, bench_context.wait_budget,
                                 target_seconds=config.getoption("--bench-seconds"),
                                 threshold=config.getoption("--load-threshold"))
    benchmark.extra_info.update({
        "model": variant.model, "backend": variant.backend, "kind": variant.kind, "family": variant.family,
        "batch_size": batch_size, "mode": mode, **{key: variant.get(key) for key in FACTS},
        "rss_increase_mb": round(rss_mb, 1), "guard": measured.record,
    })
    if measured.rounds:
        benchmark.extra_info["p90"] = float(np.percentile(measured.rounds, 90))
        benchmark.extra_info["throughput_per_s"] = batch_size / float(np.median(measured.rounds))
        if (variant.model, variant.backend) == REFERENCE:   # pooled with test_reference_again's rounds
            benchmark.extra_info["rounds_ms"] = milliseconds(measured.rounds)
    probs = pred.run(fn(arg)) if mode == "prepare" else fn(arg)
    assert probs.shape == (batch_size, len(pred.labels))


@dataclass
class NoopPredictor(Predictor):
    """Returns fixed probabilities without looking at the text: timing it measures the harness, not a model."""
    output: np.ndarray = None

    def prepare(self, texts):
        return texts

    def run(self, prepared):
        return self.output


@guarded
def test_harness_overhead(benchmark, bench_context):
    """The guard's timing loop plus the Predictor wrapper around a no-op model, at batch 1 end to end."""
    pred = NoopPredictor("harness", "noop", ["a", "b"], "harness", output=np.full((1, 2), 0.5))
    config = bench_context.config
    benchmark.group = "harness"
    measured = guarded_benchmark(benchmark, pred.predict_proba, bench_context.batch(1), bench_context.wait_budget,
                                 target_seconds=min(0.5, config.getoption("--bench-seconds")),
                                 threshold=config.getoption("--load-threshold"))
    benchmark.extra_info.update({"model": "harness", "backend": "noop", "kind": "harness", "batch_size": 1,
                                 "mode": "e2e", "guard": measured.record})
    assert pred.predict_proba(["x"]).shape == (1, 2)


def test_reference_again(bench_context, reference_variant, reference_again, batch_size, mode):
    """The teacher in PyTorch eager, every speedup's denominator, timed again after every other case. Its rounds
    join the first pass's in bench.json, speedups divide by the median of both, and the report says how far the
    two passes lie apart: a machine whose speed drifted during the benchmark shows there, not in silently skewed
    ratios."""
    pred, _ = bench_context.predictor(reference_variant)
    fn, arg = timed_call(pred, bench_context.batch(batch_size), mode)
    for _ in range(2):   # the warm-up test_latency gives every case
        fn(arg)
    config = bench_context.config
    measured = guarded_rounds(fn, arg, bench_context.wait_budget, target_seconds=config.getoption("--bench-seconds"),
                              threshold=config.getoption("--load-threshold"),
                              name=f"test_reference_again[b{batch_size}-{mode}]")
    reference_again[(batch_size, mode)] = milliseconds(measured.rounds)
    assert len(measured.rounds) >= 5


def milliseconds(rounds: list[float]) -> list[float]:
    return [round(t * 1e3, 4) for t in rounds]


def test_gpu_variants_available():
    """Reports, as a skip with its reason, when the GPU variants (CUDA eager/fp16/TorchScript, ORT CUDA) cannot run."""
    import pytest

    from .export import gpu_skip_reason
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)
