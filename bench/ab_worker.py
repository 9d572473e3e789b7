"""One side of the A/B gate (bench/ab.py): loads one source tree's exported models and times them on request.

bench/ab.py starts this file as a script, once in the base revision's worktree and once in the working tree, with that
tree first on PYTHONPATH, so `bench.zoo` below is the code of the revision being measured. It speaks JSON lines:

    -> {"variants": [...], "commit": "abc1234"}                        (once loaded)
    <- {"variant": "teacher/torch", "batch": 32, "calls": 8}
    -> {"wall": seconds per call, "cpu": process CPU seconds per call}

Each request times `calls` back-to-back end-to-end predictions (raw text in, probabilities out) after one untimed call.
`--plant MODEL/BACKEND=FACTOR` makes that variant do FACTOR times its work on average (1.3: one extra call in every
~3.3): how the gate's tests and README figures plant a slowdown on one side only. bench/test_latency.py plants the
same way (BENCH_PLANT_SLOWDOWN), with `planted` below: this file imports nothing of its own tree at the top, so the
measured tree's code is what it loads.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
import time
from pathlib import Path


def planted(fn, factor: float):
    """`fn` doing `factor` times its work on average, by whole extra calls spread evenly over the calls."""
    if factor == 1:
        return fn
    calls = 0

    def slowed(arg):
        nonlocal calls
        extra = math.floor((calls + 1) * (factor - 1)) - math.floor(calls * (factor - 1))
        calls += 1
        for _ in range(extra):
            fn(arg)
        return fn(arg)
    return slowed


def plant_factor(spec: str, name: str) -> float:
    """The factor `spec` ("model/backend=factor", or "") plants in the variant `name`: 1 when it names another."""
    target, _, factor = spec.partition("=")
    return float(factor) if factor and target == name else 1.0


def ok_variant_names(run) -> list[str]:
    """The measured tree's validated variants, read with that tree's own code."""
    try:
        from distill.families.manifest import read_manifest
    except ImportError:   # a base from before the typed manifest: its bench.zoo reads the file
        from bench.zoo import read_manifest as read_file
        variants = read_file(run.dir / "export" / "manifest.json")["variants"]
        return [f"{v['model']}/{v['backend']}" for v in variants if v["status"] == "ok"]
    return [v.name for v in read_manifest(run.dir).ok()]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--profile", required=True)
    p.add_argument("--variants", default="", help="regex on model/backend")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plant", default="", help="MODEL/BACKEND=FACTOR")
    args = p.parse_args(argv)
    if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
        sys.path.pop(0)  # this file's folder: its modules must not shadow the measured tree's

    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    try:
        from bench.zoo import load_variant, open_run
    except ImportError as exc:
        send({"error": f"this revision has no bench.zoo.load_variant ({exc}); the A/B gate needs a base at or after "
                       "the commit that added it"})
        return 2
    from distill.environment import git_commit

    run = open_run(args.profile)
    names = [n for n in ok_variant_names(run) if re.search(args.variants, n)]
    split = run.split()
    texts = split.loc[split["split"] == "test", "text"].tolist()
    models, loaded = run.models(), {}
    send({"variants": names, "commit": git_commit()})

    for line in sys.stdin:
        request = json.loads(line)
        name = request["variant"]
        if name not in loaded:
            model_id, backend = name.rsplit("/", 1)
            predict = load_variant(run, model_id, backend, models).predict_proba
            loaded[name] = planted(predict, plant_factor(args.plant, name))
        predict = loaded[name]
        batch = (texts * -(-request["batch"] // len(texts)))[: request["batch"]]
        predict(batch)
        calls = request["calls"]
        gc.disable()  # as timeit does: a collection landing in one side's window is noise, not a change
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            predict(batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        gc.enable()
        send({"wall": wall / calls, "cpu": cpu / calls})
    return 0


if __name__ == "__main__":
    sys.exit(main())
