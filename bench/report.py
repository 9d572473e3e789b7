"""`python -m bench.report`: the accuracy-vs-latency report of a profile, in reports/<profile>/.

results.csv (every model x backend x batch size), report.md (the verdict first, then headline tables with Pareto
marks, where the time goes, the machine), pareto.png (the run's metric with CI vs batch-1 latency), report.html (one
self-contained page, plot embedded), summary.json (the verdict as data, for the README).
"""
from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from distill import runs
from distill.atomic import atomic_path, write_json, write_text
from distill.errors import UserError, one_line_errors
from distill.families import FAMILIES
from distill.families.manifest import read_manifest
from distill.predictions import Predictions

from . import verdict as judge
from .results import (frontier, harness_overhead_ms, join, metric_name, pareto_front, pick, read_bench,
                      reference_passes, scored)
from .zoo import open_run

HEADLINE = ["model", "backend", "trained_on", "accuracy", "ci", "median_ms", "p90_ms", "speedup", "size_mb", "pareto"]
WHERE_TIME_GOES = ["model", "backend", "prepare_median_ms", "model_only_median_ms", "median_ms"]


def headline(table: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    table = scored(table)
    rows = table[table["batch_size"] == batch_size].copy()
    if rows.empty:
        return rows
    rows["pareto"] = pareto_front(rows).map({True: "★", False: ""})
    rows["ci"] = rows.apply(lambda r: f"[{r.score_low:.3f}, {r.score_high:.3f}]", axis=1)
    rows["backend"] = rows.apply(lambda r: r.backend + (" (under load)" if r.contended else ""), axis=1)
    name = metric_name(table)   # the run's metric leads; accuracy follows it when it is another
    columns = ["score" if c == "accuracy" else c for c in HEADLINE]
    if name != "accuracy":
        columns.insert(columns.index("ci") + 1, "accuracy")
    return rows.sort_values("median_ms")[columns].rename(columns={"score": name})


def overhead_sentence(table: pd.DataFrame, overhead_ms: float | None) -> str | None:
    """The harness's own cost beside the fastest student's batch-1 time."""
    b1 = table[(table["batch_size"] == 1) & (table["kind"] != "teacher")]
    if overhead_ms is None or b1.empty:
        return None
    fastest = b1.sort_values("median_ms").iloc[0]
    return (f"Harness overhead (pytest-benchmark's loop + the Predictor wrapper around a no-op model): "
            f"{overhead_ms * 1e3:.2f} µs per call, {overhead_ms / fastest.median_ms:.1%} of the fastest student's "
            f"batch-1 time ({fastest.model}/{fastest.backend}, {fastest.median_ms * 1e3:.0f} µs).")


REFERENCE_DRIFT_WARNING = 0.10   # two passes of the same model further apart than this: the machine changed speed


def reference_sentence(bench: dict) -> str | None:
    """How far the teacher's two eager passes (start and end of the benchmark) lie apart, end to end."""
    passes = [p for p in reference_passes(bench) if p["mode"] == "e2e"]
    if not passes:
        return None
    drifts = [p["again_ms"] / p["first_ms"] - 1 for p in passes]
    listed = ", ".join(f"batch {p['batch_size']} {p['first_ms']:.4g} → {p['again_ms']:.4g} ms ({d:+.1%})"
                       for p, d in zip(passes, drifts))
    sentence = (f"The teacher in PyTorch eager, every speedup's denominator, timed at the start of the benchmark and "
                f"again at its end (end to end, medians): {listed}; speedups divide by the median of both passes' "
                "rounds.")
    worst = max(drifts, key=abs)
    if abs(worst) > REFERENCE_DRIFT_WARNING:
        sentence += (f" **The passes differ by {abs(worst):.0%}: the machine's speed changed during the benchmark, "
                     "so every speedup here is uncertain by about that much.**")
    return sentence


def where_time_goes(table: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    rows = table[table["batch_size"] == batch_size].sort_values("median_ms")
    return rows[[c for c in WHERE_TIME_GOES if c in rows]].rename(columns={
        "prepare_median_ms": "prepare_ms", "model_only_median_ms": "model_ms", "median_ms": "end_to_end_ms"})


def plot(table: pd.DataFrame, path: Path, batch_size: int = 1) -> None:
    table = scored(table)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["batch_size"] == batch_size].copy()
    rows["pareto"] = pareto_front(rows)
    fig, ax = plt.subplots(figsize=(9, 6))
    for family, group in rows.groupby("family"):
        students = group[group["kind"] != "teacher"]
        registered = FAMILIES.get(family)
        if not students.empty:
            ax.errorbar(students["median_ms"], students["score"],
                        yerr=[students["score"] - students["score_low"], students["score_high"] - students["score"]],
                        fmt=registered.marker if registered else "o", ms=7, capsize=3, alpha=0.8,
                        label=registered.title if registered else family)
    teacher = rows[rows["kind"] == "teacher"]
    ax.errorbar(teacher["median_ms"], teacher["score"],
                yerr=[teacher["score"] - teacher["score_low"], teacher["score_high"] - teacher["score"]],
                fmt="*", ms=16, color="crimson", capsize=3, label="teacher (all backends)", zorder=5)
    front = rows[rows["pareto"]].sort_values("median_ms")
    ax.step(front["median_ms"], front["score"], where="post", color="black", lw=1, ls="--", label="Pareto front")
    for r in front.itertuples():
        ax.annotate(f"{r.model}/{r.backend}", (r.median_ms, r.score), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency at batch {batch_size}, end to end (ms, log scale)")
    ax.set_ylabel(f"test {metric_name(table)} (95% bootstrap CI)")
    ax.set_title(f"{metric_name(table).capitalize()} vs latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def batch_one_line(machine: dict) -> str | None:
    """Which text the batch-1 cases timed (bench/texts.py), or None for a bench.json from before it was recorded."""
    timed = machine.get("batch_1_text")
    if not timed:
        return None
    return (f"batch 1 times the test text of median length ({timed['words']} words of {timed['median_of']} texts' "
            f"median): \"{timed['text']}\"")


def machine_lines(bench: dict) -> list[str]:
    m = bench.get("machine_info", {})
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    lines = [f"CPU: {m.get('cpu_model')} ({m.get('cpu_count')} cores; {' '.join(m.get('cpu_flags', []))})",
             f"threads: {m.get('threads')}", f"CUDA: {m.get('cuda') or 'none'}",
             f"Python {m.get('python_version')}; {versions}",
             f"commit {m.get('git_commit')}, benchmarked {bench.get('datetime', '')}"]
    return lines + [line for line in [batch_one_line(m)] if line]


def markdown(profile, table, bench, verdict, gpu_note, overhead_ms=None, drift_notes=()) -> str:
    parts = [f"> **{verdict['warning']}**", ""] if verdict and verdict["warning"] else []
    parts += [f"# {metric_name(table).capitalize()} vs latency — profile `{profile}`", ""]
    parts += ["## Verdict", "", judge.text(verdict, bullet="- "), ""]
    for b in (1, 32):
        rows = headline(table, b)
        if rows.empty:
            continue
        parts += [f"## Batch {b}, end to end (tokenising included), sorted by latency; ★ = Pareto-optimal", "",
                  tabulate(rows, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g"), ""]
    parts += ["## Where the time goes (medians, ms): prepare = tokenise/vectorise, model = the model alone", ""]
    for b in (1, 32):
        rows = where_time_goes(table, b)
        if not rows.empty:
            parts += [f"### Batch {b}", "", tabulate(rows, headers="keys", tablefmt="github", showindex=False,
                                                      floatfmt=".4g"), ""]
    for sentence in (overhead_sentence(table, overhead_ms), reference_sentence(bench)):
        if sentence:
            parts += [sentence, ""]
    if table["contended"].any():
        parts += ["Rows marked *(under load)* were measured while other processes used the CPU and could not be "
                  "re-measured cleanly; treat them with care.", ""]
    if drift_notes:
        parts += ["Int8 exports kept past their drift tolerance (their accuracy above is the cost):", ""]
        parts += [f"- {note}" for note in drift_notes] + [""]
    if gpu_note:
        parts += [f"GPU: {gpu_note}", ""]
    parts += ["## Machine", ""] + [f"- {line}" for line in machine_lines(bench)] + [""]
    parts += ["All rows: `results.csv`. Plot: `pareto.png`.", ""]
    return "\n".join(parts)


def html_verdict(verdict: dict | None) -> tuple[str, str]:
    """(the warning, above the title; the verdict's sentences and budget table, below it)."""
    if verdict is None:
        return "", f"<p>{html.escape(judge.text(None))}</p>"
    warning = verdict["warning"]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in judge.lines(verdict) if line != warning)
    return (f'<p class="warning"><strong>{html.escape(warning)}</strong></p>' if warning else "",
            f"<ul>{items}</ul>" + judge.budget_table(verdict).to_html(index=False, classes="verdict"))


def html_page(profile, md_text, table, png: Path, verdict: dict | None) -> str:
    image = base64.b64encode(png.read_bytes()).decode()
    tables = []
    for b in sorted(table["batch_size"].unique()):
        rows = headline(table, b)
        tables.append(f"<h2>Batch {b}, end to end</h2>" + rows.to_html(index=False, classes="results",
                                                                        float_format=lambda x: f"{x:.4g}"))
    warning, body = html_verdict(verdict)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>my-bert-is-too-big — {html.escape(profile)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:3px 7px}}
th{{background:#f3f3f3}}img{{max-width:100%}}.warning{{background:#fde8e8;padding:.6em;border-left:4px solid #c00}}
</style></head>
<body>{warning}<h1>{metric_name(table).capitalize()} vs latency — profile {html.escape(profile)}</h1>
{body}
<img id="pareto" alt="the run's metric vs latency, Pareto front" src="data:image/png;base64,{image}">
{''.join(tables)}
<details><summary>Report as Markdown</summary><pre>{html.escape(md_text)}</pre></details>
</body></html>
"""


def summary_record(profile, table, bench, overhead_ms, verdict: dict | None) -> dict:
    """What the README quotes beside results.csv: the warning and the verdict, the frontier, the harness overhead,
    the machine it ran on."""
    table = scored(table)
    best, teacher = frontier(table)
    machine = bench.get("machine_info", {})
    return {
        "profile": profile, "warning": verdict["warning"] if verdict else None,
        "headline": judge.lines(verdict) if verdict else [], "picks": verdict["picks"] if verdict else [],
        "verdict": verdict,
        "frontier": None if best is None else {
            "model": best.model, "backend": best.backend, "accuracy": best.accuracy, "ci_low": best.ci_low,
            "ci_high": best.ci_high, "metric": metric_name(table), "score": best.score, "score_low": best.score_low,
            "score_high": best.score_high, "teacher_score": teacher["score"],
            "median_ms": best.median_ms, "teacher_accuracy": teacher["accuracy"],
            "teacher_eager_ms": teacher["median_ms"], "speedup": teacher["median_ms"] / best.median_ms},
        "harness_overhead_ms": overhead_ms, "harness_overhead_line": overhead_sentence(table, overhead_ms),
        "reference_passes": reference_passes(bench), "reference_line": reference_sentence(bench),
        "machine": {k: machine.get(k) for k in ("cpu_model", "cpu_flags", "cpu_count", "threads", "versions",
                                                 "git_commit", "batch_1_text")},
        "benchmarked": bench.get("datetime"),
    }


def run_predictions(profile: str, artifacts) -> Predictions | None:
    """The run's models' dev and test predictions (a cached stage, built here if missing), or None when the run's
    stages are not under `artifacts` (a report rendered from a manifest alone)."""
    try:
        run = open_run(profile, artifacts)
    except UserError:
        return None
    return Predictions.of_run(run) if run.key("soft_labels") else None


def build_report(profile: str, artifacts="artifacts", reports="reports", budget_ms=None, max_drop=None,
                 predictions: Predictions | None = None) -> dict:
    """Write reports/<profile>/; `predictions` (default: the run's own) feed the verdict's paired CIs and warning."""
    out = Path(reports) / profile
    manifest = read_manifest(Path(artifacts) / profile)
    bench = read_bench(out / "bench.json")
    table = join(manifest, bench)
    picks = []
    for kwargs in ({"budget_ms": budget_ms}, {"max_drop": max_drop}):
        if next(iter(kwargs.values())) is not None:
            picks.append(pick(table, **kwargs)[1])
    verdict = judge.verdict(table, predictions or run_predictions(profile, artifacts), picks)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot(table, out / "pareto.png")
    overhead = harness_overhead_ms(bench)
    drift_notes = [v.get("drift_note") for v in manifest.ok() if v.get("drift_note")]
    md_text = markdown(profile, table, bench, verdict, manifest.gpu_skip_reason, overhead, drift_notes)
    write_text(out / "report.md", md_text)
    write_json(out / "summary.json", summary_record(profile, table, bench, overhead, verdict))
    write_text(out / "report.html", html_page(profile, md_text, table, out / "pareto.png", verdict))
    return {"table": table, "picks": picks, "verdict": verdict, "text": judge.text(verdict), "markdown": md_text,
            "dir": out}


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mbtb render", description="Write reports/<run>/results.csv, report.md, "
                                "pareto.png, report.html and summary.json from the export manifest and bench.json "
                                "(no training, no timing: `mbtb report` runs everything).")
    runs.add_arguments(p)
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--reports", default="reports")
    p.add_argument("--budget-ms", type=float, help="name the best-scoring variant whose batch-1 latency fits")
    p.add_argument("--max-drop", type=float, help="name the fastest variant within this many points of the "
                   "teacher's score (the run's metric)")
    args = p.parse_args(argv)
    result = build_report(runs.run_name(args.profile, args.data, args.name), args.artifacts, args.reports,
                          args.budget_ms, args.max_drop)
    print(f"wrote {result['dir']}/results.csv, report.md, pareto.png, report.html, summary.json\n")
    print(result["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
