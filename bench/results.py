"""Join accuracy and timings into one table: one row per model x backend x batch size (results.csv)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from distill.catalogue import TRAINED_ON, parse_model_id
from distill.errors import UserError
from distill.families.manifest import Manifest

HARNESS = ("harness", "noop")   # bench/test_latency.py:test_harness_overhead
REFERENCE = ("teacher", "torch")   # every speedup's denominator, timed twice (bench/test_latency.py)


def median_seconds(case: dict) -> float:
    """A case's median latency in seconds; for the reference timed twice, the median of both passes' rounds."""
    info = case.get("extra_info", {})
    if info.get("again_rounds_ms") and info.get("rounds_ms"):
        return float(np.median(info["rounds_ms"] + info["again_rounds_ms"])) / 1e3
    return case["stats"]["median"]


def reference_passes(bench: dict) -> list[dict]:
    """The reference's two passes, case by case: batch size, mode, and the median (ms) of each pass and of both."""
    passes = []
    for case in bench["benchmarks"]:
        info = case["extra_info"]
        if (info.get("model"), info.get("backend")) == REFERENCE and info.get("again_rounds_ms"):
            passes.append({"batch_size": info["batch_size"], "mode": info["mode"],
                           "first_ms": float(np.median(info["rounds_ms"])),
                           "again_ms": float(np.median(info["again_rounds_ms"])),
                           "pooled_ms": median_seconds(case) * 1e3})
    return sorted(passes, key=lambda p: (p["mode"] != "e2e", p["batch_size"], p["mode"]))


def read_bench(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run `make bench PROFILE=...` first") from None
    except ValueError:
        raise UserError(f"{path} is not valid JSON; rerun `make bench` to rewrite it") from None


def timings(bench: dict) -> pd.DataFrame:
    """One row per benchmark case with its latency statistics (milliseconds) and extra_info."""
    rows = []
    for case in bench["benchmarks"]:
        info = case["extra_info"]
        guard = info.get("guard") or {}
        rows.append({
            "model": info["model"], "backend": info["backend"], "batch_size": info["batch_size"],
            "mode": info["mode"], "median_ms": median_seconds(case) * 1e3, "p90_ms": info.get("p90", np.nan) * 1e3,
            "throughput_per_s": info.get("throughput_per_s"), "speedup": info.get("speedup_vs_teacher_eager"),
            "rss_increase_mb": info.get("rss_increase_mb"), "contended": guard.get("contended", False),
            "other_load_max": guard.get("other_load_max"),
        })
    return pd.DataFrame(rows)


def join(manifest: Manifest, bench: dict) -> pd.DataFrame:
    """results.csv: accuracy facts of each variant (manifest) x end-to-end timings, model-only median beside."""
    variants = pd.DataFrame([v.row() for v in manifest.ok()])
    keep = ["model", "backend", "kind", "family", "metric", "score", "score_low", "score_high", "accuracy", "ci_low",
            "ci_high", "macro_f1", "agreement", "cosine_to_teacher", "max_abs_diff", "size_bytes", "params"]
    variants = variants[[c for c in keep if c in variants]]
    variants = scored(variants)
    t = timings(bench)
    if t.empty:
        raise UserError("the benchmark JSON holds no timed cases")
    e2e = t[t["mode"] == "e2e"].drop(columns="mode")
    table = variants.merge(e2e, on=["model", "backend"])
    for mode, column in (("prepare", "prepare_median_ms"), ("model", "model_only_median_ms")):
        part = t[t["mode"] == mode][["model", "backend", "batch_size", "median_ms"]]
        table = table.merge(part.rename(columns={"median_ms": column}), on=["model", "backend", "batch_size"],
                            how="left")
    table["trained_on"] = table["model"].map(lambda m: TRAINED_ON.get(parse_model_id(m).mode, ""))
    table["size_mb"] = table["size_bytes"] / 1e6
    teacher = e2e[(e2e["model"] == "teacher") & (e2e["backend"] == "torch")].set_index("batch_size")["median_ms"]
    table["speedup"] = table["batch_size"].map(teacher) / table["median_ms"]
    return table.sort_values(["batch_size", "median_ms"]).reset_index(drop=True)


def e2e_medians_ms(bench: dict, batch_size: int = 1) -> dict[tuple[str, str], float]:
    """(model, backend) -> its median end-to-end latency (ms) at `batch_size` in a benchmark (bench.json)."""
    cases = [(case["extra_info"], median_seconds(case)) for case in bench["benchmarks"]]
    return {(info["model"], info["backend"]): median * 1e3 for info, median in cases
            if info["mode"] == "e2e" and info["batch_size"] == batch_size}


def harness_overhead_ms(bench: dict) -> float | None:
    """Median of the no-op Predictor case: what the timing loop and the Predictor wrapper add to every case."""
    t = timings(bench)
    rows = t[(t["model"] == HARNESS[0]) & (t["backend"] == HARNESS[1])]
    return float(rows["median_ms"].iloc[0]) if not rows.empty else None


def scored(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the score columns (the run's metric and its CI); a table from before `[eval] metric` scored
    accuracy."""
    if "score" in table:
        return table
    return table.assign(metric="accuracy", score=table["accuracy"], score_low=table.get("ci_low", table["accuracy"]),
                        score_high=table.get("ci_high", table["accuracy"]))


def metric_name(table: pd.DataFrame) -> str:
    """The run's metric (`[eval] metric`), whose value is the `score` column."""
    return str(table["metric"].iloc[0]) if "metric" in table and len(table) else "accuracy"


def frontier(table: pd.DataFrame, keep: float = 0.97, batch_size: int = 1):
    """The headline student: the fastest variant (at `batch_size`, end to end) keeping at least `keep` of the
    teacher's score (the run's metric); if none does, the best-scoring student. Returns (row, teacher eager row) or
    (None, None)."""
    table = scored(table)
    rows = table[table["batch_size"] == batch_size]
    teacher = rows[(rows["model"] == "teacher") & (rows["backend"] == "torch")]
    students = rows[rows["kind"] != "teacher"]
    if teacher.empty or students.empty:
        return None, None
    teacher = teacher.iloc[0]
    kept = students[students["score"] >= keep * teacher["score"] - 1e-12]
    best = (kept.sort_values(["median_ms", "score"], ascending=[True, False]) if not kept.empty
            else students.sort_values(["score", "median_ms"], ascending=[False, True])).iloc[0]
    return best, teacher


def pareto_front(table: pd.DataFrame, x="median_ms", y="score") -> pd.Series:
    """True where no other row is at least as fast and at least as accurate, and strictly better in one."""
    table = scored(table)
    xs, ys = table[x].to_numpy(), table[y].to_numpy()
    optimal = []
    for i in range(len(table)):
        dominated = np.any((xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i])))
        optimal.append(not dominated)
    return pd.Series(optimal, index=table.index)


def pick(table: pd.DataFrame, budget_ms: float | None = None, max_drop: float | None = None):
    """Batch-1 choice: the best-scoring variant (the run's metric) within `budget_ms`, or the fastest within
    `max_drop` points of the teacher's score (PyTorch eager). Returns (row or None, sentence)."""
    table = scored(table)
    name = metric_name(table)
    b1 = table[table["batch_size"] == 1]
    if b1.empty:
        raise UserError("no batch-1 timings: run the benchmark with batch size 1 to pick a variant")
    if budget_ms is not None:
        fits = b1[b1["median_ms"] <= budget_ms]
        if fits.empty:
            fastest = b1.sort_values("median_ms").iloc[0]
            return None, (f"nothing fits {budget_ms:g} ms at batch 1; the fastest is {fastest.model}/"
                          f"{fastest.backend} at {fastest.median_ms:.2f} ms")
        row = fits.sort_values(["score", "median_ms"], ascending=[False, True]).iloc[0]
        return row, (f"best {name} within {budget_ms:g} ms: {row.model}/{row.backend} — {name} "
                     f"{row.score:.2%}, {row.median_ms:.2f} ms at batch 1")
    if max_drop is not None:
        teacher = b1[(b1["model"] == "teacher") & (b1["backend"] == "torch")]
        if teacher.empty:
            raise UserError(f"the teacher's PyTorch eager row is missing; cannot measure a {name} drop")
        floor = teacher["score"].iloc[0] - max_drop / 100
        ok = b1[b1["score"] >= floor - 1e-12]
        row = ok.sort_values(["median_ms", "score"], ascending=[True, False]).iloc[0]
        return row, (f"fastest within {max_drop:g} {name} points of the teacher: {row.model}/{row.backend} — "
                     f"{name} {row.score:.2%}, {row.median_ms:.2f} ms at batch 1 "
                     f"({row.speedup:.1f}x the teacher)")
    return None, ""
