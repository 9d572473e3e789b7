"""Label the same MR texts in this process and on a Ray cluster started here, and print seconds and texts/s
(README, "Scaling out"). The teacher is the smoke profile's MiniLM-L6 with a fresh 2-class head, in PyTorch: its
speed, not its accuracy, is what is measured.

    .venv/bin/python scripts/scale_compare.py [--texts 2000] [--shard-size 500] [--repeats 2]

Needs `pip install .[scale]`. Run it on an otherwise idle machine: on one machine Ray can only add start-up
(a local cluster, actors that load the teacher) to the same CPU work.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from distill import assets, labelling
from distill import data as datasets
from distill import teacher as T
from distill.config import load_profile
from distill.ray_labelling import label_in_shards


def smoke_teacher(directory: Path) -> Path:
    tokenizer, model = T.load_pretrained(str(assets.minilm_dir()), 2, ["neg", "pos"], seed=13)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2, help="labelling runs on the warm cluster")
    args = parser.parse_args()
    import ray

    cfg = load_profile("smoke")
    texts = datasets.load("mr")["text"].tolist()[:args.texts]
    c = {**labelling.settings(cfg), "engine": "ray", "shard_size": args.shard_size}
    rows, said = [], []
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = smoke_teacher(Path(tmp) / "teacher")
        label = labelling.Labeller("torch", None, teacher_dir, cfg["teacher"]["max_length"], c["batch_size"])
        label(texts[:64])   # warm-up
        local, seconds = timed(lambda: label(texts))
        rows.append(["local (this process)", "-", seconds, 0.0])
        _, start = timed(lambda: ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False))
        try:
            for run in range(args.repeats):
                partial = Path(tmp) / f"shards-{run}"
                partial.mkdir()
                (logits, _, _), seconds = timed(lambda: label_in_shards(texts, label, partial, c, progress=False,
                                                                        log=said.append))
                where = "Ray, cluster start + first run" if run == 0 else "Ray, warm cluster"
                rows.append([where, f"{-(-len(texts) // args.shard_size)} x {args.shard_size}",
                             seconds + (start if run == 0 else 0.0), float(np.abs(logits - local).max())])
        finally:
            ray.shutdown()
    table = [[where, shards, f"{seconds:.1f}", f"{len(texts) / seconds:.0f}", f"{diff:.1e}"]
             for where, shards, seconds, diff in rows]
    print(f"{len(texts):,} MR texts, MiniLM-L6 in PyTorch, batch {c['batch_size']}, max_length "
          f"{cfg['teacher']['max_length']}; Ray: a local cluster of this machine's CPUs ({said[0].strip()})")
    print(tabulate(table, headers=["engine", "shards", "seconds", "texts/s", "max |Δlogit| vs local"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
