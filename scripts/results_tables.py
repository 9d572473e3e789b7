"""Print the README's result tables from a committed run: docs/results/<profile>/{accuracy.csv, ablation.csv,
results.csv, summary.json} (copied there from reports/<profile>/ after `make report`).

    .venv/bin/python scripts/results_tables.py docs/results/default
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate


def fastest_per_model(results: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    rows = results[results["batch_size"] == batch_size]
    students = rows[rows["kind"] != "teacher"].sort_values("median_ms").groupby("model", sort=False).head(1)
    teacher = rows[rows["model"] == "teacher"]
    return pd.concat([teacher, students]).sort_values("median_ms", ascending=False)


def frontier_table(results: pd.DataFrame) -> str:
    b1 = fastest_per_model(results, 1)
    b32 = results[results["batch_size"] == 32].set_index(["model", "backend"])
    teacher_acc = results.loc[(results["model"] == "teacher") & (results["backend"] == "torch"), "accuracy"].iloc[0]
    out = []
    for r in b1.itertuples():
        at32 = b32.loc[(r.model, r.backend)] if (r.model, r.backend) in b32.index else None
        out.append({"model / backend": f"{r.model} / {r.backend}", "trained on": r.trained_on,
                    "accuracy [95% CI]": f"{r.accuracy:.4f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
                    "of teacher": f"{r.accuracy / teacher_acc:.1%}", "batch 1 (ms)": f"{r.median_ms:.3g}",
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
    return tabulate([{"model": r.model, "kind": r.kind, "accuracy": f"{r.accuracy:.4f}",
                      "95% CI": f"[{r.ci_low:.3f}, {r.ci_high:.3f}]", "macro-F1": f"{r.macro_f1:.3f}",
                      "agreement with teacher": f"{r.agreement:.3f}", "params": f"{r.params:,}"}
                     for r in accuracy.itertuples()], headers="keys", tablefmt="github")


def ablation_table(ablation: pd.DataFrame) -> str:
    rows = []
    for student, group in ablation.groupby("student", sort=False):
        cells = {r.variant: f"{r.accuracy:.4f}" for r in group.itertuples()}
        best = group.loc[group["accuracy"].idxmax()]
        rows.append({"student": student, **{v: cells.get(v, "—") for v in ("hard", "soft", "soft+aug",
                                                                          "soft+aug+anneal")},
                     "best gain vs hard (paired 95% CI)": f"{100 * best.gain_vs_hard:+.2f} "
                     f"[{100 * best.gain_ci_low:+.2f}, {100 * best.gain_ci_high:+.2f}]"})
    return tabulate(rows, headers="keys", tablefmt="github")


def static_table(ablation: pd.DataFrame) -> str:
    rows = ablation[ablation["student"] == "static"]
    return tabulate([{"variant": r.variant, "accuracy [95% CI]": f"{r.accuracy:.4f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
                      "gain vs hard [paired 95% CI]": f"{100 * r.gain_vs_hard:+.2f} [{100 * r.gain_ci_low:+.2f}, "
                                                      f"{100 * r.gain_ci_high:+.2f}]",
                      "train texts": f"{r.train_texts:,}"} for r in rows.itertuples()],
                    headers="keys", tablefmt="github")


def targets_table(results: pd.DataFrame, summary: dict, ablation: pd.DataFrame | None) -> str:
    """The frontier issue's targets against this run: met or missed, with the numbers."""
    f = summary["frontier"]
    b1 = results[results["batch_size"] == 1]
    teacher_acc = f["teacher_accuracy"]
    rows = [("best student ≥ 97% of the teacher at ≥ 50x lower batch-1 latency",
             f"{f['accuracy'] / teacher_acc:.1%} at {f['speedup']:.0f}x ({f['model']} / {f['backend']}, "
             f"{f['median_ms']:.3g} ms vs {f['teacher_eager_ms']:.3g} ms)",
             f['accuracy'] / teacher_acc >= 0.97 and f["speedup"] >= 50)]
    # the BERT-base-class issue's bar: the most accurate student at >= 150x
    fast = b1[(b1["kind"] != "teacher") & (b1["speedup"] >= 150)]
    if not fast.empty:
        best = fast.sort_values(["accuracy", "speedup"], ascending=False).iloc[0]
        rows.append(("best student ≥ 97% of the teacher at ≥ 150x lower batch-1 latency",
                     f"{best.accuracy / teacher_acc:.1%} at {best.speedup:.0f}x ({best.model} / {best.backend}, "
                     f"{best.median_ms:.3g} ms)", best.accuracy / teacher_acc >= 0.97))
    static = b1[b1["model"].str.startswith("static-") & (teacher_acc - b1["accuracy"] <= 0.05)]
    if not static.empty:
        s = static.sort_values("median_ms").iloc[0]
        rows.append(("static student ≥ 150x at ≤ 5 points loss",
                     f"{s.model} / {s.backend} {s.speedup:.0f}x at {100 * (teacher_acc - s.accuracy):.1f} points "
                     f"({s.median_ms:.3g} ms, accuracy {s.accuracy:.4f})", s.speedup >= 150))
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
    print("\n".join(f"- {line}" for line in summary["headline"][:1]), "\n")
    ablation = pd.read_csv(args.directory / "ablation.csv") if (args.directory / "ablation.csv").exists() else None
    if "frontier" in summary:
        print(targets_table(results, summary, ablation), "\n")
    print(frontier_table(results), "\n")
    print(time_table(results), "\n")
    print(summary["harness_overhead_line"], "\n")
    if (args.directory / "ablation.csv").exists():
        print(static_table(pd.read_csv(args.directory / "ablation.csv")), "\n")
    m = summary["machine"]
    print(f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, flags {' '.join(m['cpu_flags'] or [])}; "
          f"threads {m['threads']}; commit {m['git_commit']}; benchmarked {summary['benchmarked']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
