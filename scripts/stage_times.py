"""The build time of every stage of a run, from the `stage.json` each stage wrote when it was built (so a run
finished over several invocations, or resumed, still shows what each stage cost), as CSV and a Markdown table.

    .venv/bin/python scripts/stage_times.py artifacts/full --csv docs/results/full/stage-times.csv
    .venv/bin/python scripts/stage_times.py --from-csv docs/results/full/stage-times.csv
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate


def stage_times(run_dir: Path) -> pd.DataFrame:
    rows = []
    for meta_path in sorted(run_dir.rglob("stage.json")):
        meta = json.loads(meta_path.read_text())
        rows.append({"stage": str(meta_path.parent.relative_to(run_dir)), "finished": meta.get("finished"),
                     "seconds": meta.get("info", {}).get("seconds")})
    return pd.DataFrame(rows).sort_values("finished").reset_index(drop=True)


def fold_student_exports(table: pd.DataFrame) -> pd.DataFrame:
    """The many small export stages of the students as one row (the teacher's keep theirs)."""
    students = table["stage"].str.startswith("export/") & ~table["stage"].str.startswith("export/teacher/")
    if not students.any():
        return table
    folded = {"stage": f"export/<students> ({int(students.sum())} variants)",
              "finished": table.loc[students, "finished"].max(), "seconds": table.loc[students, "seconds"].sum()}
    return pd.concat([table[~students], pd.DataFrame([folded])]).sort_values("finished").reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    table = fold_student_exports(table)
    shown = table.assign(time=table["seconds"].map(lambda s: f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"))
    return tabulate(shown[["stage", "finished", "time"]], headers="keys", tablefmt="github", showindex=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", type=Path, help="artifacts/<run>")
    p.add_argument("--csv", type=Path, help="also write the table here")
    p.add_argument("--from-csv", type=Path, help="print a table written earlier")
    args = p.parse_args()
    table = pd.read_csv(args.from_csv) if args.from_csv else stage_times(args.run_dir)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(markdown(table))
    print(f"\ntotal: {table['seconds'].sum() / 60:.1f} min over {len(table)} stages")


if __name__ == "__main__":
    main()
