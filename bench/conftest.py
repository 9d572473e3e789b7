"""pytest-benchmark set-up for `pytest bench`: options, parametrisation over the export manifest, hooks.

    pytest bench --profile smoke --batch-sizes 1,32 --benchmark-json reports/smoke/bench.json
    pytest bench --profile smoke --benchmark-compare          # against the last autosaved run in .benchmarks/

Hooks (pytest-benchmark's documented ones):
- `pytest_benchmark_update_machine_info` adds CPU model and SIMD flags, core count, library versions, thread settings.
- `pytest_benchmark_update_json` adds each case's speedup over the teacher in PyTorch eager at the same batch size
  and mode, measured in the same run: over the median of the teacher's rounds at the start and again at the end
  (`test_reference_again`), whose second pass it writes beside the first.
"""
from __future__ import annotations

import gc
import os
import re
from pathlib import Path

import psutil
import pytest
import torch

from distill.environment import cpu_flags, environment
from distill.families.exporters import STUDENT_ORT_THREADS
from distill.families.manifest import Variant, read_manifest

from .guard import WaitBudget
from .results import REFERENCE, median_seconds
from .texts import timed_batch

BATCH_SIZES = "1,8,32,128"
TIMING_MODES = "e2e,prepare,model"
REFERENCE_AGAIN = pytest.StashKey[dict]()
BATCH_ONE_TEXT = pytest.StashKey[dict]()   # the text batch-1 cases time, for machine_info


def pytest_addoption(parser):
    g = parser.getgroup("my-bert-is-too-big")
    g.addoption("--profile", default=os.environ.get("PROFILE", "default"), help="profile whose run to benchmark")
    g.addoption("--artifacts", default="artifacts", help="artifact root (default: artifacts)")
    g.addoption("--batch-sizes", default=BATCH_SIZES, help=f"comma-separated (default: {BATCH_SIZES})")
    g.addoption("--modes", default=TIMING_MODES, help="e2e (raw text in, tokenising included), prepare (tokenising or "
                "vectorising alone) and/or model (pre-tokenised input)")
    g.addoption("--variants", default="", help="regex on model/backend, e.g. 'teacher|bilstm' (default: all)")
    g.addoption("--threads", type=int, default=os.cpu_count(), help="torch and ORT intra-op threads")
    g.addoption("--bench-seconds", type=float, default=1.0, help="target measured time per case")
    g.addoption("--load-threshold", type=float, default=0.25,
                help="other processes' share of the CPU above which rounds are re-measured (default: 0.25)")
    g.addoption("--wait-budget", type=float, default=120.0,
                help="seconds the whole session may wait for a quiet machine (default: 120)")


def _manifest_variants(config) -> list[Variant]:
    variants = read_manifest(Path(config.getoption("--artifacts")) / config.getoption("--profile")).ok()
    pattern = config.getoption("--variants")
    return [v for v in variants if not pattern or re.search(pattern, v.name)]


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "variant" in metafunc.fixturenames:
        variants = _manifest_variants(config)
        metafunc.parametrize("variant", variants, ids=[v.name for v in variants])
    if "batch_size" in metafunc.fixturenames:
        sizes = [int(b) for b in config.getoption("--batch-sizes").split(",")]
        metafunc.parametrize("batch_size", sizes, ids=[f"b{b}" for b in sizes])
        metafunc.parametrize("mode", [m.strip() for m in config.getoption("--modes").split(",")])


class BenchContext:
    """Loads the variant being timed (recording the resident-memory increase) and serves test-split batches."""

    def __init__(self, config):
        from .zoo import open_run
        self.config = config
        self.run = open_run(config.getoption("--profile"), config.getoption("--artifacts"))
        self.models = self.run.models()
        split = self.run.split()
        self.texts = split[split["split"] == "test"]["text"].tolist()
        self.loaded: dict = {}
        self.wait_budget = WaitBudget(config.getoption("--wait-budget"))
        typical = timed_batch(self.texts, 1)[0]
        config.stash[BATCH_ONE_TEXT] = {"text": typical, "words": len(typical.split()),
                                        "median_of": len(self.texts)}

    def predictor(self, variant: Variant):
        """The variant's predictor and the resident memory its loading added. Only the variant being timed stays
        loaded (its cases run one after another): keeping every one loaded took 21 GB on `full`, past the
        machine's memory."""
        key = (variant.model, variant.backend)
        if key not in self.loaded:
            from .zoo import load_variant
            self.loaded.clear()
            gc.collect()
            before = psutil.Process().memory_info().rss
            pred = load_variant(self.run, variant.model, variant.backend, self.models)
            pred.predict_proba(self.texts[:8])
            self.loaded[key] = (pred, (psutil.Process().memory_info().rss - before) / 2**20)
        return self.loaded[key]

    def batch(self, size: int) -> list[str]:
        return timed_batch(self.texts, size)


@pytest.fixture(scope="session")
def reference_variant(request) -> Variant:
    """The teacher in PyTorch eager, when it is among the variants timed."""
    found = [v for v in _manifest_variants(request.config) if (v.model, v.backend) == REFERENCE]
    if not found:
        pytest.skip("the teacher in PyTorch eager is not among the variants timed (--variants)")
    return found[0]


@pytest.fixture(scope="session")
def reference_again(request) -> dict:
    """(batch size, mode) -> the reference's second-pass rounds (ms), filled by test_reference_again and written
    into bench.json by pytest_benchmark_update_json."""
    return request.config.stash.setdefault(REFERENCE_AGAIN, {})


@pytest.fixture(scope="session")
def bench_context(request):
    threads = request.config.getoption("--threads")
    torch.set_num_threads(threads)
    return BenchContext(request.config)


def pytest_benchmark_update_machine_info(config, machine_info):
    env = environment()
    machine_info.update({
        "cpu_model": env["cpu"], "cpu_flags": cpu_flags(), "cpu_count": env["cpu_count"],
        "versions": env["versions"], "python_version": env["python"], "cuda": env["cuda"],
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "onnxruntime_intra_op": torch.get_num_threads(), "onnxruntime_inter_op": 1,
                    "onnxruntime_intra_op_students": STUDENT_ORT_THREADS},
        "profile": config.getoption("--profile"), "git_commit": env["git_commit"],
    })
    if BATCH_ONE_TEXT in config.stash:
        machine_info["batch_1_text"] = config.stash[BATCH_ONE_TEXT]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    again = config.stash.get(REFERENCE_AGAIN, {})
    reference = {}
    for bench in output_json["benchmarks"]:
        info = bench.get("extra_info", {})
        if (info.get("model"), info.get("backend")) == REFERENCE:
            case = (info["batch_size"], info["mode"])
            if case in again and info.get("rounds_ms"):
                info["again_rounds_ms"] = again[case]
            reference[case] = median_seconds(bench)
    for bench in output_json["benchmarks"]:
        info = bench.setdefault("extra_info", {})
        ref = reference.get((info.get("batch_size"), info.get("mode")))
        info["speedup_vs_teacher_eager"] = round(ref / median_seconds(bench), 3) if ref else None
