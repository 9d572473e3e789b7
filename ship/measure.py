"""`python -m ship.measure PACKAGE --profile smoke`: what using a package costs, measured through its predict.py in a
fresh process of this Python, beside the run's benchmark figure for the same variant.

- load: from `import predict` to a loaded `Classifier` (numpy, onnxruntime and tokenizers imports, the checksums
  of every file, the model itself);
- batch 1: the median end-to-end `predict_proba` time of one text, the one the benchmark times at batch 1 (the
  run's first test text), after a warm-up, over `--seconds` of calls;
- benchmark: the batch-1 end-to-end median of the same variant in reports/<run>/bench.json (`mbtb bench`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.results import join, read_bench
from bench.zoo import open_run
from distill import data as datasets
from distill import runs
from distill.atomic import write_json
from distill.environment import cpu_flags
from distill.errors import UserError, one_line_errors
from distill.families.manifest import read_manifest

from .model_card import megabytes, package_files

# Runs in the child process, with the package folder first on sys.path: argv = [folder, text, seconds].
PROBE = """
import json, statistics, sys, time
started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from predict import Classifier
model = Classifier.load(sys.argv[1])
loaded = time.perf_counter()
text, seconds, times = [sys.argv[2]], float(sys.argv[3]), []
for _ in range(20):
    model.predict_proba(text)
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter()
    model.predict_proba(text)
    times.append(time.perf_counter() - t)
print(json.dumps({"load_ms": (loaded - started) * 1e3, "batch1_ms": statistics.median(times) * 1e3,
                  "calls": len(times)}))
"""


def probe(package: Path, text: str, seconds: float) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(package), text, str(seconds)], capture_output=True,
                          text=True, cwd=package)
    if done.returncode != 0:
        raise UserError(f"predict.py failed in {package}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def benchmark_ms(run, model: str, backend: str) -> float | None:
    bench_path = run.reports / "bench.json"
    if not bench_path.exists():
        return None
    table = join(read_manifest(run.dir), read_bench(bench_path))
    rows = table[(table["model"] == model) & (table["backend"] == backend) & (table["batch_size"] == 1)]
    return float(rows["median_ms"].iloc[0]) if len(rows) else None


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ship.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("package", help="a folder made by `mbtb package`")
    runs.add_arguments(p)
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--reports", default="reports")
    p.add_argument("--seconds", type=float, default=2.0, help="time spent on batch-1 calls (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the measurement here (docs/results/packages/ keeps them; "
                   "`make results-docs PROFILE=packages` writes their page)")
    args = p.parse_args(argv)
    package = Path(args.package).resolve()
    info = json.loads((package / "package.json").read_text())
    run = open_run(runs.run_name(args.profile, args.data, args.name), args.artifacts, args.reports)
    text = datasets.texts_labels(run.split(), "test")[0][0]
    files = package_files(package)
    record = {"variant": f"{info['model']}/{info['backend']}", "run": run.profile, "files": len(files),
              "size_bytes": sum(s for _, s in files), "file_sizes": dict(files), **probe(package, text, args.seconds),
              "benchmark_ms": benchmark_ms(run, info["model"], info["backend"]), "cpu_flags": cpu_flags(),
              "measured": time.strftime("%FT%T")}
    print("\n".join(table_lines([record])))
    if args.json:
        write_json(args.json, record)
    return 0


def file_lines(record: dict) -> list[str]:
    """A package's files (beside MODEL_CARD.md and manifest.json), largest first, with their sizes."""
    sizes = sorted(record.get("file_sizes", {}).items(), key=lambda item: -item[1])
    return [f"{name} ({size / 1e3:,.0f} kB)" for name, size in sizes]


def table_lines(records: list[dict]) -> list[str]:
    """A Markdown table of measurements, one row each."""
    lines = ["| variant | files | size | load (ms) | batch 1, predict.py (ms) | batch 1, benchmark (ms) | difference |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        reference = r["benchmark_ms"]
        overhead = f"{r['batch1_ms'] / reference - 1:+.0%}" if reference else "n/a (no bench.json)"
        lines.append(f"| `{r['variant']}` | {r['files']} | {megabytes(r['size_bytes'])} | {r['load_ms']:.0f} | "
                     f"{r['batch1_ms']:.4f} | {'n/a' if reference is None else f'{reference:.4f}'} | {overhead} |")
    return lines

if __name__ == "__main__":
    sys.exit(main())
