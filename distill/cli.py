"""`python -m distill`: run the distillation pipeline for a profile."""
from __future__ import annotations

import argparse
import sys
import time

from .config import apply_overrides, available_profiles, load_profile
from .errors import one_line_errors

EPILOG = """\
stages (each cached under artifacts/<profile>/, skipped when its inputs are unchanged):
  data -> teacher fine-tune -> soft labels (teacher logits) -> students (baseline, distilled) -> evaluation

examples:
  python -m distill --profile smoke
  python -m distill --data reviews.csv --text-col body --label-col stars --teacher bert-base-uncased
  python -m distill --set teacher.epochs=1 --set students.bilstm.loss=kl

ablation (hard labels vs soft targets vs + augmented transfer set vs + teacher annealing, per student):
  python -m distill.ablation --profile smoke      -> reports/<profile>/ablation.csv and ablation.md
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill", description="Distil a fine-tuned BERT-family teacher into "
                                "small students and compare their test accuracy.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="default", help=f"config profile: {', '.join(available_profiles())} "
                   "(configs/<name>.toml; default: %(default)s)")
    p.add_argument("--data", help="data set: mr, bbc, a CSV path, or hf:<name> (overrides data.name)")
    p.add_argument("--text-col", help="text column of a CSV / HF data set (default: text)")
    p.add_argument("--label-col", help="label column of a CSV / HF data set (default: label)")
    p.add_argument("--teacher", help="teacher: minilm-l6, mpnet-base, a Hugging Face id or a local model dir")
    p.add_argument("--students", help="comma-separated students to train (overrides students.names)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any profile value, e.g. --set teacher.epochs=1 (repeatable)")
    p.add_argument("--artifacts", default="artifacts", help="artifact root (default: %(default)s)")
    p.add_argument("--reports", default="reports", help="report root (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--rebuild-corrupt", action="store_true", help="rebuild a cached stage whose files no longer "
                   "match their recorded checksums, instead of stopping with an error")
    return p


def config_from_args(args) -> dict:
    cfg = load_profile(args.profile)
    overrides = list(args.overrides)
    for flag, key in ((args.data, "data.name"), (args.text_col, "data.text_col"), (args.label_col, "data.label_col"),
                      (args.teacher, "teacher.model")):
        if flag is not None:
            overrides.append(f"{key}={_quote(flag)}")
    if args.students is not None:
        names = [n.strip() for n in args.students.split(",") if n.strip()]
        overrides.append("students.names=[" + ", ".join(_quote(n) for n in names) + "]")
    cfg = apply_overrides(cfg, overrides)
    from .labelling import settings
    settings(cfg)   # a typo in [labelling] fails now, not after the teacher's fine-tune
    return cfg


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@one_line_errors
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    started = time.time()
    from tabulate import tabulate

    from .pipeline import Run
    cfg = config_from_args(args)
    run = Run(args.profile, cfg, args.artifacts, args.reports, progress=not args.quiet,
              rebuild_corrupt=args.rebuild_corrupt)
    print(f"profile {args.profile}: data={cfg['data']['name']} teacher={cfg['teacher']['model']} "
          f"students={','.join(cfg['students']['names'])}")
    table = run.all()
    shown = table.drop(columns=[c for c in ("members",) if c in table])
    print()
    print(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".4f"))
    print(f"\nwrote {run.reports / 'accuracy.csv'} and accuracy.json in {time.time() - started:.0f}s")
    return 0
