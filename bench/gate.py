"""`python -m bench.gate` (`make gate-ratios`): fail when a speedup ratio regresses against a recorded baseline.

The one-revision fallback of the A/B gate (bench/ab.py, `make gate`), for when no base revision is at hand.

Absolute times on shared CI machines are noise, so the gate compares ratios measured inside one benchmark run:
each student against the teacher in PyTorch eager, and each optimised backend against the same model's native
backend. A ratio is the geometric mean over the batch sizes timed (end to end). It regresses when it falls below
baseline / tolerance; the default tolerance 1.6 lets ordinary noise pass and still catches a 2x slowdown.
Ratios shift between CPUs (SIMD width, int8 kernels) by more than a 2x slowdown, so a baseline recorded on another
CPU or thread setting is refused (exit 2); `--update` on the machine that gates records one there.

    python -m bench.gate --profile smoke --bench reports/smoke/gate-bench.json            # check
    python -m bench.gate --profile smoke --bench run1.json run2.json run3.json --update   # new baseline (median)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from tabulate import tabulate

from distill.atomic import write_json
from distill.errors import UserError
from distill.families import FAMILIES

from .results import read_bench, timings

BASELINE_DIR = Path(__file__).resolve().parent / "baselines"
DEFAULT_TOLERANCE = 1.6
TEACHER = ("teacher", "torch")


def ratios(bench: dict) -> dict[str, float]:
    """Speedup ratios of one run: {"<model>/<backend> vs <reference>": geometric-mean ratio}."""
    t = timings(bench)
    t = t[t["mode"] == "e2e"] if (t["mode"] == "e2e").any() else t
    median = {(r.model, r.backend, r.batch_size): r.median_ms for r in t.itertuples()}
    native_backends = {f.native_backend for f in FAMILIES.values()}
    natives = {m: b for (m, b, _) in median if b in native_backends}
    out: dict[str, list[float]] = {}
    for (model, backend, batch), ms in median.items():
        if (model, backend) == TEACHER:
            continue
        if backend in native_backends and model != "teacher":
            ref = (*TEACHER, batch)
        else:
            ref = (model, natives.get(model), batch)
        if ref in median:
            out.setdefault(f"{model}/{backend} vs {ref[0]}/{ref[1]}", []).append(median[ref] / ms)
    return {key: math.exp(sum(map(math.log, vals)) / len(vals)) for key, vals in sorted(out.items())}


def compare(current: dict, baseline: dict, tolerance: float):
    """Rows for every baseline ratio, and the keys that regressed."""
    rows, regressed = [], []
    for key, base in baseline.items():
        now = current.get(key)
        if now is None:
            rows.append({"ratio": key, "baseline": base, "now": None, "change": None, "status": "not measured"})
            continue
        bad = now < base / tolerance
        rows.append({"ratio": key, "baseline": base, "now": now, "change": f"{now / base - 1:+.0%}",
                     "status": "REGRESSED" if bad else "ok"})
        if bad:
            regressed.append(key)
    return rows, regressed


def machine(bench: dict) -> dict:
    info = bench.get("machine_info", {})
    return {"cpu": info.get("cpu_model"), "cpu_flags": info.get("cpu_flags"), "threads": info.get("threads")}


def describe(m: dict) -> str:
    return f"{m.get('cpu')} [{' '.join(m.get('cpu_flags') or []) or 'flags not recorded'}]"


def same_machine(run: dict, baseline: dict) -> bool:
    return all(run.get(k) == baseline.get(k) for k in ("cpu", "cpu_flags", "threads"))


def baseline_path(profile: str) -> Path:
    return BASELINE_DIR / f"{profile}.json"


def load_baseline(profile: str, path: Path | None = None) -> dict:
    import json
    path = path or baseline_path(profile)
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no speedup baseline at {path}; create one with `make gate-baseline PROFILE={profile}`") \
            from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--bench", nargs="+", help="pytest-benchmark JSON file(s) of one machine; with several, each "
                   "ratio is their median (default: reports/<profile>/gate-bench.json)")
    p.add_argument("--baseline", help=f"baseline file (default: {BASELINE_DIR.name}/<profile>.json in bench/)")
    p.add_argument("--tolerance", type=float, help=f"allowed slowdown factor of a ratio (default {DEFAULT_TOLERANCE},"
                   " or the baseline's own)")
    p.add_argument("--update", action="store_true", help="write the current ratios as the new baseline")
    args = p.parse_args(argv)
    bench_paths = [Path(b) for b in args.bench or [f"reports/{args.profile}/gate-bench.json"]]
    target = Path(args.baseline) if args.baseline else baseline_path(args.profile)
    try:
        benches = [read_bench(path) for path in bench_paths]
        per_run = [ratios(bench) for bench in benches]
        for path, bench, run in zip(bench_paths, benches, per_run):
            if not run:
                raise UserError(f"{path} has no ratio to gate: it needs the teacher/torch cases and students")
            if not same_machine(machine(bench), machine(benches[0])):
                raise UserError(f"{path} and {bench_paths[0]} come from different machines; a median needs one")
        current = {key: statistics.median(run[key] for run in per_run if key in run)
                   for key in sorted(set().union(*per_run))}
        bench = benches[-1]
        if args.update:
            write_json(target, {"profile": args.profile, "tolerance": args.tolerance or DEFAULT_TOLERANCE,
                                "ratios": current, "runs": len(benches), **machine(bench),
                                "datetime": bench.get("datetime")})
            print(f"wrote {len(current)} ratios (median of {len(benches)} run(s)) to {target}")
            return 0
        baseline = load_baseline(args.profile, target)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tolerance = args.tolerance or baseline.get("tolerance", DEFAULT_TOLERANCE)
    rows, regressed = compare(current, baseline["ratios"], tolerance)
    run_machine = machine(bench)
    print(f"this run: {describe(run_machine)}; baseline ({target}): {describe(baseline)}")
    if not same_machine(run_machine, baseline):
        print(f"error: the baseline {target} was recorded on another CPU or thread setting ({describe(baseline)}); "
              "ratios move between machines by more than a 2x slowdown, so they cannot be judged here. Use the "
              "A/B gate (`make gate`: base revision and working tree on this machine), or record a baseline here "
              "with `make gate-baseline GATE_BASELINE=<path>`.", file=sys.stderr)
        return 2
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".2f"))
    if regressed:
        print(f"\nspeedup regression: {len(regressed)} ratio(s) fell below baseline / {tolerance:g}:")
        for key in regressed:
            print(f"  {key}")
        return 1
    print(f"\nno speedup regression ({len(rows)} ratios within baseline / {tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
