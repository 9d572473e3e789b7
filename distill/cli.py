"""`python -m distill`: run the distillation pipeline for a profile."""
from __future__ import annotations

import argparse
import time

from . import runs
from .config import apply_overrides, load_profile
from .errors import one_line_errors
from .metrics import METRIC_HELP

EPILOG = """\
stages (each cached under artifacts/<run>/, skipped when its inputs are unchanged):
  data -> teacher fine-tune -> labeller -> soft labels (teacher logits) -> students (baseline, distilled) -> evaluation

examples:
  mbtb distill --profile smoke
  mbtb distill --data reviews.csv --text-col body --label-col stars     # run "reviews": artifacts/reviews/
  mbtb distill --data reviews.csv --teacher ./my-bert --no-finetune --label-map "NEG=neg,POS=pos"
  mbtb distill --metric recall:spam --class-weight balanced --unlabelled more-reviews.txt
  mbtb distill --set teacher.epochs=1 --set students.bilstm.loss=kl

(`python -m distill` is the same command.)
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbtb distill", description="Distil a fine-tuned BERT-family teacher into "
                                "small students and compare their test scores.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    runs.add_arguments(p, data_help="data set: mr, bbc, a CSV path, or hf:<name> (overrides data.name); a CSV run "
                       "is named after its file")
    p.add_argument("--text-col", help="text column of a CSV / HF data set (default: text)")
    p.add_argument("--label-col", help="label column of a CSV / HF data set (default: label)")
    p.add_argument("--teacher", help="teacher: minilm-l6, mpnet-base, a Hugging Face id or a local model dir")
    p.add_argument("--no-finetune", action="store_true", help="the teacher is already fine-tuned for these labels: "
                   "use it as it is (teacher.finetune = false)")
    p.add_argument("--label-map", help="the teacher's label names -> the data's, e.g. \"NEG=negative,POS=positive\" "
                   "(teacher.label_map)")
    p.add_argument("--unlabelled", help="in-domain text for the transfer set: a file with one text per line, or a "
                   "CSV (its text column) (transfer.unlabelled)")
    p.add_argument("--metric", help=f"what early stopping, the headline and the picks follow: {METRIC_HELP} "
                   "(eval.metric; default: accuracy)")
    p.add_argument("--class-weight", choices=("none", "balanced"), help="weight the gold-label loss of the teacher "
                   "and the students by inverse class frequency (teacher/students.class_weight)")
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
    flags = ((args.data, "data.name"), (args.text_col, "data.text_col"), (args.label_col, "data.label_col"),
             (args.teacher, "teacher.model"), (args.label_map, "teacher.label_map"),
             (args.unlabelled, "transfer.unlabelled"), (args.metric, "eval.metric"),
             (args.class_weight, "teacher.class_weight"),
             (args.class_weight, "students.class_weight"))
    for flag, key in flags:
        if flag is not None:
            overrides.append(f"{key}={_quote(flag)}")
    if args.no_finetune:
        overrides.append("teacher.finetune=false")
    if args.students is not None:
        names = [n.strip() for n in args.students.split(",") if n.strip()]
        overrides.append("students.names=[" + ", ".join(_quote(n) for n in names) + "]")
    cfg = apply_overrides(cfg, overrides)
    from .labelling import settings
    settings(cfg)   # engine = "ray" without Ray installed fails now, not after the teacher's fine-tune
    return cfg


def open_run(args, cfg: dict | None = None):
    """The Run these arguments select (named after its data when the data is not the profile's), claimed in
    artifacts/<name>/run.json so that no other run's cache is replaced."""
    from .pipeline import Run
    cfg = cfg if cfg is not None else config_from_args(args)
    name = runs.run_name(args.profile, args.data, args.name)
    runs.claim(args.artifacts, name, args.profile, cfg)
    run = Run(name, cfg, args.artifacts, args.reports, progress=not args.quiet, rebuild_corrupt=args.rebuild_corrupt,
              base_profile=args.profile)
    if name != args.profile:
        print(f"run {name!r} (profile {args.profile} on {cfg['data']['name']}): artifacts in {run.dir}/, "
              f"reports in {run.reports}/")
    return run


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@one_line_errors
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    started = time.time()
    from tabulate import tabulate

    run = open_run(args)
    cfg = run.cfg
    print(f"profile {args.profile}: data={cfg['data']['name']} teacher={cfg['teacher']['model']} "
          f"students={','.join(cfg['students']['names'])}")
    table = run.all()
    shown = table.drop(columns=[c for c in ("members",) if c in table])
    print()
    print(tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".4f"))
    print(f"\nwrote {run.reports / 'accuracy.csv'} and accuracy.json in {time.time() - started:.0f}s")
    return 0
