"""How often the A/B gate (`make gate`) passes an unchanged tree and catches planted slowdowns, under load.

Runs `make gate BASE=<base>` repeatedly: unchanged, then with BENCH_PLANT_SLOWDOWN=<variant>=<factor> for each factor
(planted on the head side only), while `--busy` other processes each keep one core busy. Writes every trial's exit
status, wall time and the planted variant's measured change to a JSON file; the README's gate table is made from it.

    .venv/bin/python scripts/gate_trials.py --out docs/results/gate/trials.json          # ~25 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.atomic import write_json  # noqa: E402
from distill.environment import cpu_flags, environment  # noqa: E402

BUSY_LOOP = "while True: pass"


def trial(base: str, plant: str, args: str) -> dict:
    env = {**os.environ, "BENCH_PLANT_SLOWDOWN": plant}
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "bench.ab", "--base", base, *args.split()], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # not through make, whose exit status is 2 for any failure
    report = json.loads((ROOT / "reports/smoke/gate-ab.json").read_text())
    variant = plant.partition("=")[0]
    return {"plant": plant, "exit": done.returncode, "seconds": round(time.time() - started, 1),
            "regressed": [f"{c['variant']} b{c['batch']}" for c in report["cases"] if c["status"] == "REGRESSED"],
            "undecided": [f"{c['variant']} b{c['batch']}" for c in report["cases"] if c["status"] == "UNDECIDED"],
            "planted_change": {f"b{c['batch']}": round(c["change"], 3) for c in report["cases"]
                               if c["variant"] == variant},
            "max_change_elsewhere": round(max(c["change"] for c in report["cases"] if c["variant"] != variant), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="HEAD")
    p.add_argument("--variant", default="tfidf_lr-distilled/sklearn")
    p.add_argument("--unchanged", type=int, default=10)
    p.add_argument("--planted", default="2:5,1.3:5", help="factor:runs,... (default: 2:5,1.3:5)")
    p.add_argument("--busy", type=int, default=1, help="processes spinning on a core throughout (default: 1)")
    p.add_argument("--gate-args", default="", help="extra bench.ab arguments for every trial")
    p.add_argument("--out", default="reports/smoke/gate-trials.json")
    args = p.parse_args()

    first = subprocess.run(["make", "-s", "gate", f"BASE={args.base}"], cwd=ROOT, capture_output=True, text=True)
    print(f"prepared both trees (exit {first.returncode})", flush=True)
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
    trials = []
    try:
        plan = [("", args.unchanged)] + [(f"{args.variant}={f}", int(n)) for f, n in
                                         (item.split(":") for item in args.planted.split(",") if item)]
        for plant, runs in plan:
            for i in range(runs):
                result = trial(args.base, plant, f"--skip-prepare {args.gate_args}".strip())
                trials.append(result)
                print(f"{plant or 'unchanged'} #{i + 1}: exit {result['exit']}, {result['seconds']:.0f}s, "
                      f"planted change {result['planted_change']}, regressed {result['regressed']}", flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    env = environment()
    write_json(ROOT / args.out, {"base": args.base, "busy_processes": args.busy, "gate_args": args.gate_args,
                                 "machine": {"cpu": env["cpu"], "cpu_count": env["cpu_count"],
                                             "cpu_flags": cpu_flags(), "git_commit": env["git_commit"]},
                                 "trials": trials})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
