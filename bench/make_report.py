"""`python -m bench.make_report` (what `make report` runs): one profile from data to report, every stage timed.

    distill   data, teacher fine-tune, labeller (the teacher's fastest faithful export), soft labels, students
    ablation  the transfer set and the students trained on it (--no-ablation, or `make report ABLATION=0`, skips it)
    export    every model x backend, validated against its source
    bench     pytest-benchmark over the export manifest (batch 1 and 32; skipped when nothing it times changed)
    report    each model's dev and test predictions (a cached stage), results.csv, report.md/.html, pareto.png,
              summary.json

Each cached stage is reused, so a second run with nothing changed only checks checksums. The run prints a table of
where the time went, also written to reports/<profile>/timings.json (with `--started`, the wall time before Python
started, i.e. `make`'s set-up, is counted too), and ends with the verdict (bench/verdict.py): a warning when a
student beats the teacher, the teacher's score, and the best variant at each speedup budget.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

from distill.atomic import write_json
from distill.environment import environment
from distill.errors import one_line_errors
from distill.families.manifest import manifest_path

from .timing import BATCH_SIZES, BENCH_SECONDS, time_variants



class StepTimer:
    """Wall time per step, and the stages each step built or found cached (from `Run.timings`)."""

    def __init__(self, run):
        self.run = run
        self.steps: list[dict] = []
        self.stages: list[dict] = []

    @contextlib.contextmanager
    def step(self, name: str, note: str = ""):
        print(f"== {name}{f' ({note})' if note else ''}", flush=True)
        first = len(self.run.timings)
        started = time.time()
        record = {"step": name, "seconds": None, "note": note}
        self.steps.append(record)
        yield record
        record["seconds"] = round(time.time() - started, 1)
        self.stages += [{"step": name, **row} for row in self.run.timings[first:]]
        print(f"== {name}: {record['seconds']:.0f}s", flush=True)


def bench_is_current(bench_json: Path, manifest: Path, batch_sizes: list[int]) -> bool:
    """bench.json exists, is newer than the export manifest and covers the requested batch sizes."""
    if not bench_json.exists() or bench_json.stat().st_mtime < manifest.stat().st_mtime:
        return False
    try:
        done = {b["extra_info"].get("batch_size") for b in json.loads(bench_json.read_text())["benchmarks"]}
    except (OSError, ValueError, KeyError):
        return False
    return set(batch_sizes) <= done


def stage_table(timer: StepTimer, setup_seconds: float | None, total: float) -> list[dict]:
    rows = []
    if setup_seconds is not None:
        rows.append({"step": "setup", "stage": "virtualenv + pip install (make)", "status": "",
                     "seconds": round(setup_seconds, 1)})
    for step in timer.steps:
        stages = [s for s in timer.stages if s["step"] == step["step"]]
        built = [s for s in stages if s["status"] == "built"]
        for s in built:
            rows.append({"step": step["step"], "stage": s["stage"], "status": "built", "seconds": s["seconds"]})
        cached = [s for s in stages if s["status"] == "cached"]
        other = step["seconds"] - sum(s["seconds"] for s in built) - sum(s["seconds"] for s in cached)
        if cached:
            rows.append({"step": step["step"], "stage": f"{len(cached)} cached stage(s), checksums verified",
                         "status": "cached", "seconds": round(sum(s["seconds"] for s in cached), 1)})
        label = step["note"] or ("loading, scoring, writing" if stages else "")
        rows.append({"step": step["step"], "stage": label or "(all of it)", "status": "",
                     "seconds": round(max(other, 0.0), 1)})
    rows.append({"step": "total", "stage": "wall time" + (" including set-up" if setup_seconds is not None else ""),
                 "status": "", "seconds": round(total, 1)})
    return rows


def parser():
    from distill.cli import parser as distill_parser
    p = distill_parser()
    p.prog = "mbtb report"
    p.description = ("Distil, run the ablation, export, benchmark and report one profile (what `make report` runs), "
                     "timing every stage; writes reports/<profile>/ (report.md/.html, results.csv, pareto.png, "
                     "timings.json).")
    p.epilog = __doc__.split("\n\n", 1)[1].split("\n\nEach")[0]
    p.add_argument("--no-ablation", action="store_true", help="leave out the ablation (the transfer set and the "
                   "students trained on it): the report then covers the spine's students only")
    p.add_argument("--batch-sizes", default=BATCH_SIZES, help="batch sizes to time (default: %(default)s; the "
                   "full grid: 1,8,32,128)")
    p.add_argument("--bench-seconds", type=float, default=BENCH_SECONDS, help="measured time per benchmark case, "
                   "in seconds (default: %(default)s)")
    p.add_argument("--bench-args", default="", help="extra pytest arguments for the benchmark, as one string")
    p.add_argument("--backends", help="comma-separated exported backends to export and time (default: every one; "
                   "each model's native backend always)")
    p.add_argument("--rebench", action="store_true", help="time again even when nothing timed has changed")
    p.add_argument("--budget-ms", type=float, help="pick-for-me: the best-scoring variant within this batch-1 "
                   "latency")
    p.add_argument("--max-drop", type=float, help="pick-for-me: the fastest variant within this many points of "
                   "the teacher's score (the run's metric)")
    p.add_argument("--started", type=float, help="epoch seconds when `make` started, so set-up time is counted")
    return p


@one_line_errors
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    started = time.time()
    from tabulate import tabulate

    from distill.ablation import run_ablation
    from distill.cli import open_run
    from distill.predictions import Predictions

    from .export import export_all
    from .report import build_report

    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    run = open_run(args)
    timer = StepTimer(run)
    with timer.step("distill"):
        run.all()
    if args.no_ablation:
        timer.steps.append({"step": "ablation", "seconds": 0.0, "note": "left out (--no-ablation)"})
    else:
        with timer.step("ablation"):
            run_ablation(run, "mbtb ablation --profile " + args.profile
                         + (f" --name {run.profile}" if run.profile != args.profile else ""))
    with timer.step("export"):
        entries = export_all(run, progress=not args.quiet,
                             backends_filter=args.backends.split(",") if args.backends else None)
    failed = [f"{e['model']}/{e['backend']}" for e in entries if e["status"] != "ok"]
    if failed:
        print(f"  {len(failed)} export(s) failed and are left out: {', '.join(failed)}")
    bench_json = run.reports / "bench.json"
    current = bench_is_current(bench_json, manifest_path(run.dir), batch_sizes)
    with timer.step("bench", "unchanged since the last run: not timed again" if current and not args.rebench
                    else f"batch {args.batch_sizes}, {args.bench_seconds:g} s per case") as record:
        if not current or args.rebench:
            time_variants(run, args.artifacts, args.batch_sizes, args.bench_seconds, shlex.split(args.bench_args))
            record["cases"] = len(json.loads(bench_json.read_text())["benchmarks"])
    with timer.step("report"):
        result = build_report(run.profile, args.artifacts, args.reports, args.budget_ms, args.max_drop,
                              Predictions.of_run(run))
    now = time.time()
    setup = started - args.started if args.started else None
    total = now - (args.started or started)
    rows = stage_table(timer, setup, total)
    write_json(run.reports / "timings.json", {
        "profile": run.profile, "base_profile": args.profile, "finished": time.strftime("%FT%T"),
        "total_seconds": round(total, 1),
        "setup_seconds": None if setup is None else round(setup, 1), "ablation": not args.no_ablation,
        "batch_sizes": batch_sizes, "bench_seconds": args.bench_seconds,
        "steps": timer.steps, "stages": timer.stages, "table": rows, "environment": environment()})
    print("\nwhere the time went:\n" + tabulate(rows, headers="keys", tablefmt="github", floatfmt=".1f"))
    print(f"\nwrote {result['dir']}/report.md, report.html, summary.json, results.csv, pareto.png and timings.json "
          f"in {total / 60:.1f} min\n")
    print(result["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
