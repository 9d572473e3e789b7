"""How often the A/B gate (`make gate`) passes an unchanged tree and catches planted slowdowns, under load.

Runs `make gate BASE=<base>` repeatedly: unchanged, then with BENCH_PLANT_SLOWDOWN=<variant>=<factor> for each factor
(planted on the head side only), while `--busy` other processes each keep one core busy. Writes every trial's exit
status, wall time and the planted variant's measured change to a JSON file; the README's gate table is made from it.

    .venv/bin/python scripts/gate_trials.py --out docs/results/gate/trials.json          # ~45 min on 2 cores
    .venv/bin/python scripts/gate_trials.py --table docs/results/gate/trials.json        # the README's table
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


def table(path: Path) -> str:
    from tabulate import tabulate
    saved = json.loads(Path(path).read_text())
    rows, groups = [], {}
    for t in saved["trials"]:
        groups.setdefault(t["plant"], []).append(t)
    for plant, trials in groups.items():
        variant = plant.partition("=")[0]
        failed = [t for t in trials if t["exit"] != 0]
        named = [t for t in failed if t["regressed"] and all(r.startswith(variant + " ") for r in t["regressed"])]
        changes = [c for t in trials for c in t["planted_change"].values()]
        rows.append({"head": f"planted {plant.partition('=')[2]}x in {variant}" if plant else "unchanged",
                     "runs": len(trials), "gate failed": len(failed),
                     "failed naming only the planted variant": len(named) if plant else "—",
                     "undecided cases": sum(len(t["undecided"]) for t in trials),
                     "measured change of the planted variant": (f"{min(changes):.2f}–{max(changes):.2f}x"
                                                                if changes else "—"),
                     "largest change elsewhere": f"{max(t['max_change_elsewhere'] for t in trials):.2f}x",
                     "seconds per run (median)": sorted(t["seconds"] for t in trials)[len(trials) // 2]})
    m = saved["machine"]
    return (tabulate(rows, headers="keys", tablefmt="github") +
            f"\n\n{saved['busy_processes']} other process(es) spinning on a core throughout; {m['cpu']}, "
            f"{m['cpu_count']} cores, flags {' '.join(m['cpu_flags'])}; commit {m['git_commit']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="HEAD")
    p.add_argument("--variant", default="tfidf_lr-distilled/sklearn")
    p.add_argument("--unchanged", type=int, default=10)
    p.add_argument("--planted", default="2:5,1.3:5", help="factor:runs,... (default: 2:5,1.3:5)")
    p.add_argument("--busy", type=int, default=1, help="processes spinning on a core throughout (default: 1)")
    p.add_argument("--gate-args", default="", help="extra bench.ab arguments for every trial")
    p.add_argument("--out", default="reports/smoke/gate-trials.json")
    p.add_argument("--table", metavar="TRIALS_JSON", help="print the table of a finished trials file and exit")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return 0

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
