"""`mbtb package`: one variant of a run as a folder that runs on its own (numpy, onnxruntime, tokenizers).

    mbtb package bilstm-distilled/onnx-int8 --profile smoke          -> packages/smoke/bilstm-distilled-onnx-int8/
    mbtb package --budget-ms 1 --profile smoke --out my-model         # pick-for-me's choice within 1 ms at batch 1
    mbtb package --list --profile smoke                               # the variants that can be packaged
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.results import read_bench
from bench.zoo import open_run
from distill import runs
from distill.errors import UserError, one_line_errors
from distill.families.manifest import Manifest, read_manifest

from .build import build_package
from .choose import named_variant, packageable_names, picked_variant
from .model_card import CARD, megabytes, package_files


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbtb package", description="Write one validated variant of a run as a "
                                "self-contained folder: its model files, predict.py (numpy, onnxruntime and "
                                "tokenizers only), requirements.txt, MODEL_CARD.md and a sha256 manifest.",
                                epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", nargs="?", help="MODEL/BACKEND as in the report, e.g. bilstm-distilled/onnx-int8")
    runs.add_arguments(p)
    p.add_argument("--out", help="the package folder (default: packages/<run>/<model>-<backend>)")
    p.add_argument("--budget-ms", type=float, help="instead of a variant: the best-scoring packageable variant "
                   "whose batch-1 latency in the run's benchmark fits this many ms")
    p.add_argument("--max-drop", type=float, help="instead of a variant: the fastest packageable variant within "
                   "this many points of the teacher's score")
    p.add_argument("--list", action="store_true", help="list the variants that can be packaged, and stop")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--reports", default="reports")
    return p


def chosen_variant(args, run, manifest: Manifest) -> dict:
    picks = [option for option in (args.budget_ms, args.max_drop) if option is not None]
    if bool(args.variant) + len(picks) != 1:
        raise UserError("name one variant (MODEL/BACKEND), or give --budget-ms or --max-drop for pick-for-me's "
                        "choice; `mbtb package --list` shows the packageable ones")
    if args.variant:
        return named_variant(manifest, args.variant)
    entry, sentence = picked_variant(manifest, read_bench(run.reports / "bench.json"), args.budget_ms, args.max_drop)
    print(f"pick: {sentence}")
    return entry


@one_line_errors
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    run = open_run(runs.run_name(args.profile, args.data, args.name), args.artifacts, args.reports)
    manifest = read_manifest(run.dir)
    if args.list:
        print("\n".join(packageable_names(manifest)))
        return 0
    entry = chosen_variant(args, run, manifest)
    out = Path(args.out) if args.out else Path("packages") / run.profile / f"{entry['model']}-{entry['backend']}"
    bench_path = run.reports / "bench.json"
    check = build_package(run, entry, out, read_bench(bench_path) if bench_path.exists() else None)
    files = package_files(out)
    print(f"packaged {entry['model']}/{entry['backend']} in {out}/: {len(files)} files, "
          f"{megabytes(sum(size for _, size in files))}; max |p - p_export| = {check.max_abs_diff:.3g} on "
          f"{check.sentences} test texts")
    print(f"try it: python {out / 'predict.py'} \"some text\"   (the card: {out / CARD})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
