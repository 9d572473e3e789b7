"""Print the README's result tables from a committed run: docs/results/<profile>/{accuracy.csv, ablation.csv,
results.csv, summary.json} (copied there from reports/<profile>/ after `make report`). Scores are the run's metric
(`[eval] metric`; accuracy in tables written before it), the verdict is bench/verdict.py's.

    .venv/bin/python scripts/results_tables.py docs/results/default
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import verdict as judge
from bench.results import metric_name, scored


def fastest_per_model(results: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    rows = results[results["batch_size"] == batch_size]
    students = rows[rows["kind"] != "teacher"].sort_values("median_ms").groupby("model", sort=False).head(1)
    teacher = rows[rows["model"] == "teacher"]
    return pd.concat([teacher, students]).sort_values("median_ms", ascending=False)


def frontier_table(results: pd.DataFrame) -> str:
    results = scored(results)
    b1 = fastest_per_model(results, 1)
    b32 = results[results["batch_size"] == 32].set_index(["model", "backend"])
    teacher_score = results.loc[(results["model"] == "teacher") & (results["backend"] == "torch"), "score"].iloc[0]
    out = []
    for r in b1.itertuples():
        at32 = b32.loc[(r.model, r.backend)] if (r.model, r.backend) in b32.index else None
        out.append({"model / backend": f"{r.model} / {r.backend}", "trained on": r.trained_on,
                    f"{metric_name(results)} [95% CI]": f"{r.score:.4f} [{r.score_low:.3f}, {r.score_high:.3f}]",
                    "of teacher": f"{r.score / teacher_score:.1%}", "batch 1 (ms)": f"{r.median_ms:.3g}",
                    "speedup": f"{r.speedup:.3g}x",
                    "batch 32 (ms)": f"{at32['median_ms']:.3g}" if at32 is not None else "—",
                    "speedup 32": f"{at32['speedup']:.3g}x" if at32 is not None else "—",
                    "size (MB)": f"{r.size_mb:.3g}"})
    return tabulate(out, headers="keys", tablefmt="github")


def time_table(results: pd.DataFrame) -> str:
    out = []
    for r in fastest_per_model(results, 1).itertuples():
        row = {"model / backend": f"{r.model} / {r.backend}"}
        for batch in (1, 32):
            match = results[(results["model"] == r.model) & (results["backend"] == r.backend)
                            & (results["batch_size"] == batch)]
            if match.empty:
                continue
            m = match.iloc[0]
            row[f"b{batch} prepare"] = f"{m.prepare_median_ms:.3g}"
            row[f"b{batch} model"] = f"{m.model_only_median_ms:.3g}"
            row[f"b{batch} end to end"] = f"{m.median_ms:.3g}"
        out.append(row)
    return tabulate(out, headers="keys", tablefmt="github")


def accuracy_table(accuracy: pd.DataFrame) -> str:
    accuracy, name = scored(accuracy), metric_name(scored(accuracy))
    return tabulate([{"model": r.model, "kind": r.kind, name: f"{r.score:.4f}",
                      "95% CI": f"[{r.score_low:.3f}, {r.score_high:.3f}]",
                      **({"accuracy": f"{r.accuracy:.4f}"} if name != "accuracy" else {}),
                      "macro-F1": f"{r.macro_f1:.3f}", "agreement with teacher": f"{r.agreement:.3f}",
                      "params": f"{r.params:,}"}
                     for r in accuracy.itertuples()], headers="keys", tablefmt="github")


def ablation_table(ablation: pd.DataFrame) -> str:
    """Each student's variants in the run's metric (accuracy in an ablation.csv from before the metric columns)."""
    ablation, rows = scored(ablation), []
    for student, group in ablation.groupby("student", sort=False):
        cells = {r.variant: f"{r.score:.4f}" for r in group.itertuples()}
        taught = group[group["variant"] != "hard"]   # a hard twin that beats them all shows as a loss, not +0
        best = taught.loc[taught["score"].idxmax()] if len(taught) else None
        rows.append({"student": student, **{v: cells.get(v, "—") for v in ("hard", "soft", "soft+aug",
                                                                          "soft+aug+anneal")},
                     f"best distilled variant's {metric_name(ablation)} gain vs hard (paired 95% CI)":
                         "—" if best is None else f"{100 * best.gain_vs_hard:+.2f} [{100 * best.gain_ci_low:+.2f}, "
                                                  f"{100 * best.gain_ci_high:+.2f}] ({best.variant})"})
    return tabulate(rows, headers="keys", tablefmt="github")


def static_table(ablation: pd.DataFrame) -> str:
    ablation = scored(ablation)
    rows = ablation[ablation["student"] == "static"]
    return tabulate([{"variant": r.variant,
                      f"{metric_name(ablation)} [95% CI]": f"{r.score:.4f} [{r.score_low:.3f}, {r.score_high:.3f}]",
                      "gain vs hard [paired 95% CI]": f"{100 * r.gain_vs_hard:+.2f} [{100 * r.gain_ci_low:+.2f}, "
                                                      f"{100 * r.gain_ci_high:+.2f}]",
                      "train texts": f"{r.train_texts:,}"} for r in rows.itertuples()],
                    headers="keys", tablefmt="github")


# The whole-curve issue's bars (#27, set for `full`): the most accurate variant at each batch-1 speedup keeps this share
CURVE_BARS = {5: 0.98, 15: 0.96, 50: 0.95, 150: 0.95, 500: 0.90}
INT8_BAR_POINTS, INT8_BAR_SPEEDUP = 1.0, 2.0


def curve_rows(budgets: list[dict]) -> list[tuple[str, str, bool]]:
    rows = []
    for band in budgets:
        bar, best = CURVE_BARS.get(band["speedup"]), band["best"]
        if bar is None:
            continue
        measured = (f"{best['share']:.1%} [{best['share_low']:.1%}, {best['share_high']:.1%}] at "
                    f"{best['speedup']:.0f}x ({best['model']} / {best['backend']}, {best['median_ms']:.3g} ms)"
                    if best else "nothing this fast")
        rows.append((f"most accurate variant ≥ {bar:.0%} of the teacher at ≥ {band['speedup']}x", measured,
                     bool(best) and best["share"] >= bar))
    return rows


def int8_losses(b1: pd.DataFrame) -> pd.DataFrame:
    """Each transformer's int8 backends against its own PyTorch eager fp32 run: points lost and speed gained."""
    if "family" not in b1:
        return b1.iloc[0:0].assign(fp32=[], points=[], own_speedup=[])
    eager = b1[b1["backend"] == "torch"].set_index("model")
    int8 = b1[(b1["family"] == "transformer") & b1["backend"].str.contains("int8")
              & b1["model"].isin(eager.index)].copy()
    int8["fp32"] = int8["model"].map(eager["score"])
    int8["points"] = 100 * (int8["score"] - int8["fp32"])
    int8["own_speedup"] = int8["model"].map(eager["median_ms"]) / int8["median_ms"]
    return int8.sort_values(["model", "own_speedup"], ascending=[True, False])


def int8_table(results: pd.DataFrame) -> str:
    b1 = scored(results[results["batch_size"] == 1])
    rows = [{"model": r.model, "int8 backend": r.backend, "fp32 (eager)": f"{r.fp32:.4f}", "int8": f"{r.score:.4f}",
             "points": f"{r.points:+.2f}", "vs its eager": f"{r.own_speedup:.2f}x",
             "vs the teacher": f"{r.speedup:.3g}x"} for r in int8_losses(b1).itertuples()]
    return (tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True) if rows
            else "No transformer has an int8 export here.")


def targets_table(results: pd.DataFrame, summary: dict, ablation: pd.DataFrame | None) -> str:
    """The frontier issue's targets against this run, in its metric: met or missed, with the numbers."""
    b1 = scored(results[results["batch_size"] == 1])
    f = summary["frontier"]
    name, teacher = metric_name(b1), f.get("teacher_score", f["teacher_accuracy"])
    # the frontier issue's bar (>= 50x) and the BERT-base-class issue's (>= 150x): the best-scoring student that fast
    rows = []
    for speedup in (50, 150):
        fast = b1[(b1["kind"] != "teacher") & (b1["speedup"] >= speedup)]
        if fast.empty:
            continue
        best = fast.sort_values(["score", "speedup"], ascending=False).iloc[0]
        rows.append((f"best student ≥ 97% of the teacher at ≥ {speedup}x lower batch-1 latency",
                     f"{best.score / teacher:.1%} at {best.speedup:.0f}x ({best.model} / {best.backend}, "
                     f"{best.median_ms:.3g} ms vs {f['teacher_eager_ms']:.3g} ms)", best.score / teacher >= 0.97))
    rows += curve_rows(summary.get("verdict", {}).get("budgets", []))
    teacher_int8 = int8_losses(b1).query("model == 'teacher'")
    if not teacher_int8.empty:
        kept = teacher_int8[(teacher_int8["points"] >= -INT8_BAR_POINTS)
                            & (teacher_int8["own_speedup"] >= INT8_BAR_SPEEDUP)]
        rows.append((f"int8 teacher within {INT8_BAR_POINTS:g} point of fp32 at ≥ {INT8_BAR_SPEEDUP:g}x its eager speed",
                     "; ".join(f"{r.backend} {r.points:+.2f} points at {r.own_speedup:.1f}x"
                               for r in teacher_int8.itertuples()), not kept.empty))
    static = b1[b1["model"].str.startswith("static-") & (teacher - b1["score"] <= 0.05)]
    if not static.empty:
        s = static.sort_values("median_ms").iloc[0]
        rows.append(("static student ≥ 150x at ≤ 5 points loss",
                     f"{s.model} / {s.backend} {s.speedup:.0f}x at {100 * (teacher - s.score):.1f} points "
                     f"({s.median_ms:.3g} ms, {name} {s.score:.4f})", s.speedup >= 150))
    if ablation is not None and (ablation["student"] == "static").any():
        st = ablation[(ablation["student"] == "static") & (ablation["variant"] != "hard")]
        cis = "; ".join(f"{r.variant} {100 * r.gain_vs_hard:+.2f} [{100 * r.gain_ci_low:+.2f}, "
                        f"{100 * r.gain_ci_high:+.2f}]" for r in st.itertuples())
        rows.append(("static distilled beats its hard twin (paired 95% CI, points)", cis,
                     bool((st["gain_ci_low"] > 0).any())))
    students = b1[b1["kind"] != "teacher"]
    fastest = students.loc[students["median_ms"].idxmin()]
    overhead = summary["harness_overhead_ms"] / fastest["median_ms"]
    rows.append(("harness overhead < 5% of the fastest student",
                 f"{1e3 * summary['harness_overhead_ms']:.2f} µs, {overhead:.1%} of {fastest.model} / "
                 f"{fastest.backend} ({1e3 * fastest.median_ms:.0f} µs)", overhead < 0.05))
    return tabulate([{"target": t, "measured": m, "met?": "yes" if ok else "**no**"} for t, m, ok in rows],
                    headers="keys", tablefmt="github")


def verdict_markdown(results: pd.DataFrame, summary: dict) -> str:
    """The report's verdict: summary.json's when it holds one, else worked out from results.csv alone (untested:
    the paired CIs and the teacher check need the run's per-example predictions)."""
    return judge.text(summary.get("verdict") or judge.verdict(results), bullet="- ")


def timings_table(timings: dict) -> str:
    """Where `make report`'s wall time went, stage by stage (reports/<profile>/timings.json); the export stages are
    summed per teacher / students."""
    rows, exports = [], {}
    for r in timings["table"]:
        if r["status"] == "built" and r["stage"].startswith("export/"):
            who = "teacher" if r["stage"].startswith("export/teacher/") else "students and ensembles"
            n, seconds = exports.get(who, (0, 0.0))
            exports[who] = (n + 1, seconds + r["seconds"])
            continue
        if exports and r["step"] != "export" or r["stage"] == "loading, scoring, writing" and r["step"] == "export":
            rows += [{"step": "export", "stage": f"{who}: {n} variants exported, validated, scored", "status": "built",
                      "seconds": sec} for who, (n, sec) in exports.items()]
            exports = {}
        rows.append(r)
    return tabulate([{"step": r["step"], "stage": r["stage"], "status": r["status"],
                      "time": f"{r['seconds'] / 60:.1f} min" if r["seconds"] >= 60 else f"{r['seconds']:.1f} s"}
                     for r in rows], headers="keys", tablefmt="github")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path, help="e.g. docs/results/default")
    p.add_argument("--timings", type=Path, nargs="*", default=[], help="timings.json files to print as stage-time "
                   "tables (default: the directory's timings.json and timings-second-run.json)")
    args = p.parse_args(argv)
    for path in args.timings or [args.directory / "timings.json", args.directory / "timings-second-run.json"]:
        if path.exists():
            t = json.loads(path.read_text())
            print(f"`make report` stage times ({path}, total {t['total_seconds'] / 60:.1f} min, finished "
                  f"{t['finished']}):\n")
            print(timings_table(t), "\n")
    results = pd.read_csv(args.directory / "results.csv")
    summary = json.loads((args.directory / "summary.json").read_text())
    if (args.directory / "accuracy.csv").exists():
        print(accuracy_table(pd.read_csv(args.directory / "accuracy.csv")), "\n")
    if (args.directory / "ablation.csv").exists():
        print(ablation_table(pd.read_csv(args.directory / "ablation.csv")), "\n")
    print(verdict_markdown(results, summary), "\n")
    ablation = pd.read_csv(args.directory / "ablation.csv") if (args.directory / "ablation.csv").exists() else None
    if "frontier" in summary:
        print(targets_table(results, summary, ablation), "\n")
    print(frontier_table(results), "\n")
    print(time_table(results), "\n")
    print(summary["harness_overhead_line"], "\n")
    if summary.get("reference_line"):
        print(summary["reference_line"], "\n")
    if (args.directory / "ablation.csv").exists():
        print(static_table(pd.read_csv(args.directory / "ablation.csv")), "\n")
    m = summary["machine"]
    print(f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, flags {' '.join(m['cpu_flags'] or [])}; "
          f"threads {m['threads']}; commit {m['git_commit']}; benchmarked {summary['benchmarked']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
