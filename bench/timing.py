"""`mbtb bench`: export a run's models (cached) and time every variant with pytest-benchmark.

    mbtb bench --profile smoke --batch-sizes 1,32           -> reports/smoke/bench.json (+ an autosave in .benchmarks/)
    mbtb bench --name reviews -- --benchmark-compare        # anything after `--` goes to pytest

The timing itself is the pytest suite in bench/ (test_latency.py, conftest.py); this runs it on one run's variants.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from distill import runs
from distill.errors import UserError, one_line_errors

BENCH_DIR = Path(__file__).resolve().parent
BATCH_SIZES = "1,32"
BENCH_SECONDS = 0.25


def time_variants(run, artifacts: str, batch_sizes: str, bench_seconds: float, pytest_args=()) -> Path:
    """Time every exported variant of `run` (its export manifest must exist); returns reports/<run>/bench.json."""
    bench_json = run.reports / "bench.json"
    run.reports.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
               "--profile", run.profile, "--artifacts", str(artifacts), "--batch-sizes", batch_sizes,
               "--bench-seconds", str(bench_seconds), "--benchmark-json", str(bench_json), "--benchmark-autosave",
               *pytest_args]
    code = subprocess.call(command)
    if code != 0:
        raise UserError(f"the benchmark failed (pytest exit {code}); its output is above")
    return bench_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbtb bench", description="Export every model of a run (cached) and time each "
                                "variant at the given batch sizes with pytest-benchmark: reports/<run>/bench.json.",
                                epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    runs.add_arguments(p)
    p.add_argument("--batch-sizes", default=BATCH_SIZES, help="comma-separated (default: %(default)s; the full grid: "
                   "1,8,32,128)")
    p.add_argument("--bench-seconds", type=float, default=BENCH_SECONDS, help="measured time per case, in seconds "
                   "(default: %(default)s)")
    p.add_argument("--backends", help="comma-separated exported backends (default: all; native ones always)")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--reports", default="reports")
    p.add_argument("--quiet", action="store_true", help="no progress bars while exporting")
    return p


@one_line_errors
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    from . import zoo
    from .export import export_all
    run = zoo.open_run(runs.run_name(args.profile, args.data, args.name), args.artifacts, args.reports)
    export_all(run, progress=not args.quiet, backends_filter=args.backends.split(",") if args.backends else None)
    path = time_variants(run, args.artifacts, args.batch_sizes, args.bench_seconds, extra)
    print(f"wrote {path}; `mbtb render --name {run.profile}` turns it into the report "
          f"(pytest {BENCH_DIR} --profile {run.profile} --benchmark-compare compares against this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
