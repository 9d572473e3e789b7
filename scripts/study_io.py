"""What the latency studies (scripts/*_study.py) share: their timing options and their table, CSV to a file or
stdout."""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from pathlib import Path


def add_timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, help="write the table here (default: print it)")
    parser.add_argument("--timing-texts", type=int, default=200, help="test texts timed at batch 1 (default 200)")
    parser.add_argument("--passes", type=int, default=2, help="timing passes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")


def write_rows(rows: list[dict], path: Path | None) -> None:
    with open(path, "w", newline="") if path else contextlib.nullcontext(sys.stdout) as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
