"""The README's table of bad inputs: every case of tests/test_cli.py run through `python -m distill` (in-process),
with the exit status and the one line it printed, plus the web API's bad requests as tests/test_serve_api.py
asserts them. Nothing is typed by hand: the messages are what the code says today.

    .venv/bin/python scripts/bad_inputs.py > /tmp/bad-inputs.md
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = {"csv": "data", "data": "data", "class": "data", "hf": "data", "unknown-data": "data", "missing-file": "data",
         "non-utf8": "data", "header": "data", "empty": "data", "malformed": "data", "one-class": "data",
         "missing-text": "data", "missing-label": "data", "wrong-label": "data", "set": "config", "bad-split": "config",
         "labelling": "config", "unknown-profile": "config", "unknown-student": "CLI", "no-students": "CLI"}


def kind_of(case: str) -> str:
    return next((kind for prefix, kind in KINDS.items() if case.startswith(prefix)), "CLI")


def run_case(main, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = err.getvalue().strip().splitlines()
    return code, lines[-1] if lines else ""


def main() -> int:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from distill.cli import main as distill_main
    from tests.conftest import cli_argv
    from tests.test_cli import CASES
    rows = []
    for case, (extra, _) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            argv = cli_argv(tmp, tmp / "never-read-teacher") + extra(tmp)
            code, line = run_case(distill_main, argv)
            shown = " ".join(a.replace(str(tmp), "…") for a in extra(tmp))
        rows.append((kind_of(case), case, shown, code, line.replace(str(tmp), "…").replace("|", "\\|")))
    print("| kind | case | input | exit | message |\n|---|---|---|---|---|")
    for kind, case, shown, code, line in sorted(rows, key=lambda r: r[0]):
        print(f"| {kind} | {case} | `{shown}` | {code} | {line} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
