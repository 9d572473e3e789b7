"""Write a results page, docs/results/<name>.md, from the committed result files in docs/results/<name>/: every
table, the stage times, the targets met or missed and the machine, computed from the files rather than pasted.

    .venv/bin/python -m scripts.results_page docs/results/default            # what `make results-docs` runs
    .venv/bin/python -m scripts.results_page --check      # every page under docs/results/: exit 1 when one is stale
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from bench.report import batch_one_line
from scripts import gate_trials, loadtest, stage_times
from scripts.results_tables import (ablation_table, accuracy_table, frontier_table, int8_table, static_table,
                                    targets_table, time_table, timings_table, verdict_markdown)


def page_path(directory: Path) -> Path:
    return directory.parent / f"{directory.name}.md"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def heading(directory: Path, title: str) -> list[str]:
    return [f"# {title}",
            f"<!-- Written by `make results-docs PROFILE={directory.name}` (scripts/results_page.py) from the files "
            f"in docs/results/{directory.name}/: change the code or the files, not this page. -->"]


def machine_line(summary: dict) -> str:
    m = summary["machine"]
    threads = ", ".join(f"{k} {v}" for k, v in m["threads"].items())
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    timed = batch_one_line(m)
    return (f"Benchmarked {summary['benchmarked'][:19]} on {m['cpu_model']}, {m['cpu_count']} cores, CPU flags "
            f"{' '.join(m['cpu_flags'] or [])}; threads: {threads}; commit {m['git_commit']}.\n\nVersions: {versions}."
            + (f"\n\n{timed[0].upper()}{timed[1:]}." if timed else ""))


def duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def timings_sections(directory: Path) -> list[str]:
    """Every `make report` stage-time record in the directory, then each stage's own build time if recorded."""
    paths = sorted(directory.glob("timings*.json"), key=lambda p: (p.name != "timings.json", p.name))
    parts = ["## Stage times"] if paths else []
    for path in paths:
        t = read_json(path)
        parts += [f"`{path.name}`: `make report` in {duration(t['total_seconds'])}, set-up included (finished "
                  f"{t['finished']}, commit {t['environment']['git_commit']}, batch sizes "
                  f"{','.join(map(str, t['batch_sizes']))}, {t['bench_seconds']} s per timed case).",
                  timings_table(t)]
    if (directory / "stage-times.csv").exists():
        table = pd.read_csv(directory / "stage-times.csv")
        parts += [f"`stage-times.csv`: each of the {len(table)} stages' own build time, from the `stage.json` it "
                  f"wrote ({duration(table['seconds'].sum())} in all; the students' exports folded into one row).",
                  stage_times.markdown(table)]
    return parts


def files_section(directory: Path) -> list[str]:
    files = [f"- [{p.name}]({directory.name}/{p.name})" for p in sorted(directory.iterdir()) if p.is_file()]
    if (directory / "experiments" / "README.md").exists():
        files.append(f"- [experiments/]({directory.name}/experiments/README.md): dated notes on how this run was made "
                     "and what it shows, and measurements beyond it (other settings, reruns) with their files")
    return ["## Files", "\n".join(files)]


def teacher_curve(summary: dict) -> list[str]:
    """The teacher's dev score at each evaluation of its fine-tune, when the summary records it."""
    training = ((summary.get("verdict") or {}).get("teacher") or {}).get("training")
    if not training:
        return []
    points = ", ".join(f"{step}: {score:.4f}" for step, score in training["dev_curve"])
    return [f"The teacher's dev curve (optimiser step: dev score): {points}."]


def profile_page(directory: Path) -> str:
    summary = read_json(directory / "summary.json")
    results = pd.read_csv(directory / "results.csv")
    accuracy = pd.read_csv(directory / "accuracy.csv") if (directory / "accuracy.csv").exists() else None
    ablation = pd.read_csv(directory / "ablation.csv") if (directory / "ablation.csv").exists() else None
    parts = heading(directory, f"Results: the `{summary['profile']}` profile")
    parts += ["How to read the verdict and the budget table: [the report](../report.md). Speedups are against this "
              "run's teacher in PyTorch eager at batch 1: compare ratios within one run only.",
              "## The run", machine_line(summary), "## Headline", f"> {summary['headline'][0]}"]
    if (directory / "pareto.png").exists():
        parts.append(f"![accuracy vs latency]({directory.name}/pareto.png)")
    parts += ["## Verdict", verdict_markdown(results, summary)] + teacher_curve(summary)
    if "frontier" in summary:
        parts += ["## Targets", targets_table(results, summary, ablation)]
    parts += ["## The fastest variant of every model",
              "Batch-1 end-to-end latency (tokenising included), each model in its fastest backend, with batch 32 "
              "beside it; the teacher in every backend.", frontier_table(results),
              "## int8 against fp32",
              "Every transformer's int8 exports against its own PyTorch eager run (fp32), batch 1, test split.",
              int8_table(results),
              "## Where the time goes",
              "Medians in ms; prepare = tokenise/vectorise, model = the model alone.", time_table(results),
              summary["harness_overhead_line"]]
    if summary.get("reference_line"):   # benchmarks from before the reference was timed twice lack it
        parts.append(summary["reference_line"])
    if accuracy is not None:
        parts += ["## Accuracy of the spine", "`make distill`: test split, 95% bootstrap intervals.",
                  accuracy_table(accuracy)]
    if ablation is not None:
        parts += ["## Ablation", "`make ablation`: test accuracy; the gain is the best distilled variant's against "
                  "the hard twin, with a paired bootstrap 95% CI.", ablation_table(ablation),
                  "The static student per variant:", static_table(ablation)]
    return "\n\n".join(parts + timings_sections(directory) + files_section(directory)) + "\n"


def gate_page(directory: Path) -> str:
    parts = heading(directory, "Results: the speedup-regression gate under load")
    parts += ["`scripts/gate_trials.py` ran `make gate` repeatedly on the committed tree against itself "
              "(`BASE=HEAD`), unchanged and with a slowdown planted on the head side, while other processes kept "
              "cores busy; what the gate does and how to read this: [the gate](../gate.md).",
              gate_trials.table(directory / "trials.json"), "## Files", "\n".join(
                  f"- [{p.name}]({directory.name}/{p.name})" for p in sorted(directory.glob("*.json")))]
    return "\n\n".join(parts) + "\n"


def loadtest_page(directory: Path) -> str:
    paths = sorted(directory.glob("*.json"))
    parts = heading(directory, "Results: the web server under load")
    parts += ["`scripts/loadtest.py` (locust, headless) against `mbtb serve` on the smoke profile, one row per "
              "result file; the set-up and what changed: [trust](../trust.md#many-users).",
              loadtest.table(paths), "## Files", "\n".join(f"- [{p.name}]({directory.name}/{p.name})" for p in paths)]
    return "\n\n".join(parts) + "\n"


def packages_page(directory: Path) -> str:
    from ship.measure import file_lines, table_lines
    records = [read_json(p) for p in sorted(directory.glob("*.json"))]
    flags = sorted({" ".join(r["cpu_flags"]) for r in records})
    parts = heading(directory, "Results: packaged students through their own predict.py")
    parts += ["`python -m ship.measure` on packages made by `mbtb package` (the runtime alone: numpy, onnxruntime, "
              "tokenizers), one row per result file: files and size, load time from `import predict` to a loaded "
              "model, and the batch-1 median through predict.py beside the benchmark's batch-1 median for the same "
              "variant in the same run's bench.json. How to build and use a package: [package](../package.md).",
              "\n".join(table_lines(records)), f"CPU flags: {'; '.join(flags)}.", "## What each package holds",
              "Beside MODEL_CARD.md and manifest.json:", "\n".join(
                  f"- `{r['variant']}`: {', '.join(file_lines(r))}" for r in records if r.get("file_sizes")),
              "## Files",
              "\n".join(f"- [{p.name}]({directory.name}/{p.name})" for p in sorted(directory.glob("*.json")))]
    return "\n\n".join(parts) + "\n"


def writer(directory: Path):
    """The page writer for a directory of result files, or None when it holds none (only an experiments/ log)."""
    if (directory / "summary.json").exists():
        return profile_page
    if (directory / "trials.json").exists():
        return gate_page
    jsons = list(directory.glob("*.json"))
    if jsons and all("endpoints" in read_json(p) for p in jsons):
        return loadtest_page
    if jsons and all("load_ms" in read_json(p) for p in jsons):
        return packages_page
    return None


def result_directories(root: Path) -> list[Path]:
    return [d for d in sorted(root.iterdir()) if d.is_dir() and writer(d)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directories", type=Path, nargs="*", help="e.g. docs/results/default (default: every directory "
                   "of result files under docs/results/)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs from its files")
    args = p.parse_args(argv)
    stale = []
    for directory in args.directories or result_directories(Path(__file__).resolve().parents[1] / "docs" / "results"):
        write = writer(directory)
        if write is None:
            print(f"error: {directory} holds no result files; after `make report PROFILE={directory.name}`, "
                  f"`make results-docs PROFILE={directory.name} COPY_REPORT=1` copies them there", file=sys.stderr)
            return 2
        text, path = write(directory), page_path(directory)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.write_text(text)
        print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from what its result files produce: run `make results-docs PROFILE="
              f"{Path(path).stem}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
