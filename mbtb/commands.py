"""`mbtb`: one command line for every stage (installed with the package; `python -m mbtb` too).

Each subcommand is the `main` of one module, so `mbtb distill ...` and `python -m distill ...` are the same thing.
"""
from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module whose main() runs it, what it does)
COMMANDS = {
    "distill": ("distill.cli", "data, teacher (fine-tuned or as it is), soft labels, students, test scores"),
    "ablation": ("distill.ablation", "hard vs soft vs +augmented transfer set vs +annealing, per student"),
    "export": ("bench.export", "export every model (ONNX, ORT-optimised, int8, TorchScript) and validate it"),
    "bench": ("bench.timing", "export (cached), then time every variant with pytest-benchmark"),
    "render": ("bench.report", "results.csv, report.md/.html, pareto.png from the last export + bench"),
    "report": ("bench.make_report", "everything above, each stage timed (what `make report` runs)"),
    "serve": ("serve.__main__", "web page + JSON API comparing teacher and students"),
    "gate": ("bench.ab", "speedup-regression gate: base revision vs working tree, timed side by side"),
    "package": ("ship.__main__", "one variant as a folder that runs without the harness, with a model card"),
}


def usage(prog: str = "mbtb") -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} <command> [options]   ({prog} <command> --help for its options)", "",
             "Distil a fine-tuned BERT into small students and measure the accuracy kept and the latency saved.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "examples:", f"  {prog} report --profile smoke",
              f"  {prog} report --data reviews.csv --text-col body --label-col stars",
              f"  {prog} serve --name reviews --port 8000"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (mbtb --help)",
              file=sys.stderr)
        return 2
    from distill.accelerated import main_or_help
    module = importlib.import_module(COMMANDS[command][0])
    # Under `accelerate launch`, every process but the main one only helps the teacher's fine-tune.
    return main_or_help(lambda: module.main(rest)) or 0


def entry_point() -> int:
    """`mbtb` itself: main(), and quiet when the reader of its output goes away (`mbtb --help | head`)."""
    try:
        return main()
    except BrokenPipeError:
        # Python's own advice: point stdout at /dev/null so the flush at exit does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(entry_point())
