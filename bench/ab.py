"""`python -m bench.ab` (`make gate`): is the working tree slower than the base revision, on this machine, now?

Ratios against a baseline recorded elsewhere move with the CPU and with load (see bench/gate.py), so this gate times
the base revision and the working tree side by side, as asv's `continuous` and pyperf's `compare_to` do:
1. the base revision (`--base`, default the merge-base with main) is checked out in its own worktree under .gate/,
   and each tree distils and exports the profile with its own code (cached between runs); when distill/, bench/,
   configs/ and the requirements are the same on both sides, the base reads the head's artifacts instead;
2. one worker process per tree (bench/ab_worker.py) loads its models; rounds alternate between the two workers, case
   by case, base first in even rounds and head first in odd ones, so both see the same load; both run on the same
   fixed thread count (default 1) and each measurement records process CPU time beside wall time;
3. per case, the change is the median over rounds of head / base (CPU time by default) with a bootstrap 95% CI.
   A case REGRESSED when the change is at least `--tolerance` and its CI lies above 1 (asv's rule: past the factor
   and significant); it is ok when its CI lies below the tolerance. Otherwise (a slowdown of the tolerance is still
   inside the CI) it is re-measured with more rounds, and if that stays so it is UNDECIDED, which fails the gate
   unless `--undecided pass`.

    python -m bench.ab                                   # working tree vs merge-base with main, smoke profile
    python -m bench.ab --base HEAD~3 --tolerance 1.5
    BENCH_PLANT_SLOWDOWN=tfidf_lr-distilled/sklearn=2 python -m bench.ab --base HEAD   # plant a slowdown in head
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tabulate import tabulate

from distill.atomic import write_json
from distill.environment import cpu_flags, environment
from distill.errors import UserError
from distill.metrics import bootstrap_interval

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ab_worker.py"
WORKTREES = ROOT / ".gate"
# The teacher's reference and fastest backends, and every distilled student in the backends it is trained in and
# served in: 11 variants, 22 cases at batch 1 and 32.
DEFAULT_VARIANTS = (r"^teacher/(torch|onnx-int8)$|^(tfidf_lr|tfidf_ridge|nb)-distilled/(sklearn|numpy)$"
                    r"|^bilstm-distilled/(torch|onnx)$|^static-distilled/numpy$")
EXPORT_BACKENDS = "onnx,ort-opt,onnx-int8,numpy"
MODEL_CODE = ["distill", "bench", "configs", "pyproject.toml", "requirements.txt", "constraints.txt"]


# --- statistics ------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    change: float          # median over rounds of head / base
    ci_low: float
    ci_high: float
    status: str            # ok | REGRESSED | improved | UNDECIDED


def bootstrap_median_ci(ratios: np.ndarray, resamples=2000, seed=0) -> tuple[float, float]:
    return bootstrap_interval(lambda rows: np.median(rows, axis=-1), (ratios,), resamples, seed)


def judge(base: np.ndarray, head: np.ndarray, tolerance: float) -> Verdict:
    """base[i], head[i]: the two sides' time in round i."""
    ratios = np.asarray(head, dtype=float) / np.asarray(base, dtype=float)
    change = float(np.median(ratios))
    low, high = bootstrap_median_ci(ratios)
    if change >= tolerance and low > 1:
        status = "REGRESSED"
    elif high >= tolerance:      # a slowdown of the tolerance is still inside the CI: not enough evidence either way
        status = "UNDECIDED"
    elif change <= 1 / tolerance and high < 1:
        status = "improved"
    else:
        status = "ok"
    return Verdict(change, low, high, status)


# --- the two trees ---------------------------------------------------------------------------------------------
def git(*args, cwd=ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    return done.stdout.strip()


def resolve_base(base: str | None) -> str:
    """The commit to compare against: `base`, or the merge-base of HEAD with main (origin/main), or HEAD."""
    if base:
        try:
            return git("rev-parse", "--verify", f"{base}^{{commit}}")
        except UserError:
            raise UserError(f"--base {base} is not a commit here; fetch it first (git fetch origin {base})") from None
    for ref in ("main", "origin/main"):
        try:
            return git("merge-base", "HEAD", ref)
        except UserError:
            continue
    return git("rev-parse", "HEAD")


def base_worktree(commit: str) -> Path:
    """A detached worktree of `commit` under .gate/ (kept, with its artifacts, for the next run)."""
    path = WORKTREES / commit[:12]
    if (path / ".git").exists():
        return path
    git("worktree", "prune")
    WORKTREES.mkdir(exist_ok=True)
    git("worktree", "add", "--detach", "--force", str(path), commit)
    return path


def same_model_code(commit: str) -> bool:
    """True when the working tree's code and configs that build and load models equal `commit`'s."""
    diff = subprocess.run(["git", "diff", "--quiet", commit, "--", *MODEL_CODE], cwd=ROOT).returncode == 0
    return diff and not git("status", "--porcelain", "--untracked-files=normal", "--", *MODEL_CODE)


def share_artifacts(tree: Path, shared: bool) -> None:
    """With the same model code on both sides, the base tree reads the head's artifacts (one build instead of two,
    and timing compares the very same models); otherwise it builds its own."""
    link = tree / "artifacts"
    if shared and not link.is_symlink():
        shutil.rmtree(link, ignore_errors=True)
        link.symlink_to(ROOT / "artifacts", target_is_directory=True)
    elif not shared and link.is_symlink():
        link.unlink()


def tree_env(tree: Path, threads: int | None) -> dict:
    """The environment of a process in `tree`; `threads` pins torch's and ORT's thread count (None: all cores)."""
    pinned = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
    return {**os.environ, "PYTHONPATH": str(tree), **pinned,
            "TOKENIZERS_PARALLELISM": "false", "BENCH_PLANT_SLOWDOWN": ""}


def prepare(tree: Path, label: str, profile: str, log=print, students: str | None = None,
            overrides: tuple[str, ...] = (), backends: str = EXPORT_BACKENDS) -> None:
    """Distil and export `profile` with the tree's own code (each stage is cached by the tree itself), on every
    core: only the timing is pinned to --threads. `overrides` are `--set` values for the distil step."""
    distil_args = (["--students", students] if students else []) + [a for o in overrides for a in ("--set", o)]
    for what, module, extra in (("distil", "distill", distil_args),
                                ("export", "bench.export", ["--backends", backends])):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", module, "--profile", profile, "--quiet", *extra], cwd=tree,
                              env=tree_env(tree, None), capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"{label} ({tree}): `python -m {module} --profile {profile}` failed: {tail[0]}")
        log(f"  {label}: {what} {profile} in {time.time() - started:.0f}s")


class Worker:
    """bench/ab_worker.py running in one tree."""

    def __init__(self, tree: Path, label: str, profile: str, variants: str, threads: int, plant: str = ""):
        self.label = label
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), "--profile", profile, "--variants", variants, "--threads", str(threads),
             "--plant", plant], cwd=tree, env=tree_env(tree, threads), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hello = self._read()
        self.variants, self.commit = hello["variants"], hello["commit"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise UserError(f"the {self.label} worker stopped: {self.process.stderr.read().strip()[-400:]}")
        message = json.loads(line)
        if "error" in message:
            raise UserError(f"{self.label}: {message['error']}")
        return message

    def time(self, variant: str, batch: int, calls: int) -> dict:
        self.process.stdin.write(json.dumps({"variant": variant, "batch": batch, "calls": calls}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


# --- measuring -------------------------------------------------------------------------------------------------
@dataclass
class Case:
    variant: str
    batch: int
    calls: int = 1
    base: dict = field(default_factory=lambda: {"wall": [], "cpu": []})
    head: dict = field(default_factory=lambda: {"wall": [], "cpu": []})

    @property
    def name(self) -> str:
        return f"{self.variant} b{self.batch}"


def measure(cases: list[Case], base: Worker, head: Worker, rounds: int, first_round: int = 0) -> None:
    for r in range(first_round, first_round + rounds):
        for case in cases:
            order = ((base, case.base), (head, case.head)) if r % 2 == 0 else ((head, case.head), (base, case.base))
            for worker, samples in order:
                timed = worker.time(case.variant, case.batch, case.calls)
                samples["wall"].append(timed["wall"])
                samples["cpu"].append(timed["cpu"])


def calibrate(cases: list[Case], head: Worker, target_seconds: float) -> None:
    """Calls per measurement so that one measurement takes about `target_seconds` (CPU time is counted in
    scheduler ticks of a few ms at worst, so a measurement must be long against them)."""
    for case in cases:
        once = head.time(case.variant, case.batch, 1)["wall"]
        case.calls = int(np.clip(round(target_seconds / max(once, 1e-7)), 1, 10_000))


@dataclass
class GateRun:
    """What one comparison of base and head measured."""
    commit: str
    head_commit: str
    dirty: bool
    cases: list
    verdicts: dict
    rounds: int
    seconds: float
    only: list


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbtb gate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="revision to compare against (default: merge-base of HEAD with main; HEAD "
                   "when there is no main)")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="regex on model/backend (default: the teacher in "
                   "PyTorch and ORT int8, every student in its own framework, the BiLSTM in ONNX)")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--tolerance", type=float, default=1.25, help="slowdown factor that fails (default: 1.25)")
    p.add_argument("--metric", choices=["cpu", "wall"], default="cpu", help="judge by process CPU time (default; "
                   "another process on the machine moves it less) or wall time")
    p.add_argument("--rounds", type=int, default=12, help="rounds per case (default: 12)")
    p.add_argument("--max-rounds", type=int, default=96, help="re-measure an undecided case up to this many rounds "
                   "(default: 96; only the undecided cases are re-measured, a few seconds per 12 rounds)")
    p.add_argument("--undecided", choices=["fail", "pass"], default="fail",
                   help="what a case still too noisy to judge after --max-rounds does to the exit status")
    p.add_argument("--threads", type=int, default=1, help="torch and ORT threads, the same on both sides")
    p.add_argument("--measure-seconds", type=float, default=0.1, help="length of one measurement (default: 0.1; "
                   "at 0.03 s this machine's windows varied +-30%% on unchanged code)")
    p.add_argument("--json", help="write every round here (default: reports/<profile>/gate-ab.json)")
    p.add_argument("--skip-prepare", action="store_true", help="use the trees' artifacts as they are")
    p.add_argument("--students", help="comma-separated students to distil (default: the profile's); fewer students "
                   "prepare faster when --variants names only some")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for the distil step on both sides, e.g. teacher.max_steps=20 (repeatable)")
    p.add_argument("--export-backends", default=EXPORT_BACKENDS, help="backends to export on both sides "
                   "(default: %(default)s); only these can be timed besides the native ones")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.tolerance <= 1 or args.rounds < 3 or args.max_rounds < args.rounds:
        print("error: --tolerance must be > 1, --rounds >= 3 and --max-rounds >= --rounds", file=sys.stderr)
        return 2
    try:
        gate = compare(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return summarise(args, gate)


def compare(args) -> GateRun:
    """Prepare both trees, then time every case on both sides, re-measuring the undecided ones."""
    workers = []
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        commit = resolve_base(args.base)
        head_commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        print(f"base {commit[:10]} vs head {head_commit}{' + working-tree changes' if dirty else ''}; profile "
              f"{args.profile}; {args.threads} thread(s) each; judged by {args.metric} time")
        base_tree = base_worktree(commit)
        shared = same_model_code(commit)
        share_artifacts(base_tree, shared)
        if not args.skip_prepare:
            options = {"students": args.students, "overrides": tuple(args.overrides),
                       "backends": args.export_backends}
            prepare(ROOT, "head", args.profile, **options)
            if shared:
                print("  base: same model code and configs as head; it reads head's artifacts")
            else:
                prepare(base_tree, "base", args.profile, **options)
        base = Worker(base_tree, "base", args.profile, args.variants, args.threads)
        workers.append(base)
        head = Worker(ROOT, "head", args.profile, args.variants, args.threads,
                      plant=os.environ.get("BENCH_PLANT_SLOWDOWN", ""))
        workers.append(head)
        common = [v for v in head.variants if v in base.variants]
        only = sorted(set(head.variants) ^ set(base.variants))
        if not common:
            raise UserError(f"no variant matching {args.variants!r} exists in both trees")
        cases = [Case(v, b) for v in common for b in sizes]
        started = time.time()
        calibrate(cases, head, args.measure_seconds)
        measure(cases, base, head, args.rounds)
        done = args.rounds
        verdicts = {c.name: judge(np.array(c.base[args.metric]), np.array(c.head[args.metric]), args.tolerance)
                    for c in cases}
        while done < args.max_rounds:
            noisy = [c for c in cases if verdicts[c.name].status == "UNDECIDED"]
            if not noisy:
                break
            extra = min(args.rounds, args.max_rounds - done)
            print(f"  re-measuring {len(noisy)} case(s) too noisy to judge: {extra} more rounds")
            measure(noisy, base, head, extra, first_round=done)
            done += extra
            for c in noisy:
                verdicts[c.name] = judge(np.array(c.base[args.metric]), np.array(c.head[args.metric]),
                                         args.tolerance)
        return GateRun(commit, head_commit, dirty, cases, verdicts, done, time.time() - started, only)
    finally:
        for worker in workers:
            worker.close()



def summarise(args, gate: GateRun) -> int:
    """The table, the JSON record and the exit status of a comparison."""
    commit, head_commit, dirty, cases, verdicts = gate.commit, gate.head_commit, gate.dirty, gate.cases, gate.verdicts
    done, seconds, only = gate.rounds, gate.seconds, gate.only
    rows = [{"case": c.name, f"base ms ({args.metric})": 1e3 * float(np.median(c.base[args.metric])),
             f"head ms ({args.metric})": 1e3 * float(np.median(c.head[args.metric])),
             "change": f"{verdicts[c.name].change - 1:+.1%}",
             "95% CI": f"[{verdicts[c.name].ci_low - 1:+.1%}, {verdicts[c.name].ci_high - 1:+.1%}]",
             "rounds": len(c.base[args.metric]),
             "wall change": f"{np.median(np.divide(c.head['wall'], c.base['wall'])) - 1:+.1%}",
             "verdict": verdicts[c.name].status} for c in cases]
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f"))
    if only:
        print(f"not compared (in one tree only): {', '.join(only)}")
    out = Path(args.json or f"reports/{args.profile}/gate-ab.json")
    write_json(out, {"base": commit, "head": head_commit, "dirty": dirty, "profile": args.profile,
                     "metric": args.metric, "tolerance": args.tolerance, "threads": args.threads,
                     "seconds": round(seconds, 1), "machine": {**{k: environment()[k] for k in ("cpu", "cpu_count")},
                                                              "cpu_flags": cpu_flags()},
                     "cases": [{"variant": c.variant, "batch": c.batch, "calls": c.calls, "base": c.base,
                                "head": c.head, **verdicts[c.name].__dict__} for c in cases]})
    regressed = [r["case"] for r in rows if r["verdict"] == "REGRESSED"]
    undecided = [r["case"] for r in rows if r["verdict"] == "UNDECIDED"]
    print(f"\n{len(cases)} cases, {done} rounds, {seconds:.0f}s of timing; details in {out}")
    if regressed:
        print(f"speedup regression: {len(regressed)} case(s) at least {args.tolerance:g}x slower than base "
              f"(CI above 1):\n  " + "\n  ".join(regressed))
        return 1
    if undecided:
        print(f"{len(undecided)} case(s) too noisy to judge after {args.max_rounds} rounds (a {args.tolerance:g}x "
              f"slowdown still inside the 95% CI): " + ", ".join(undecided) + ("; failing (--undecided fail)"
                                                                 if args.undecided == "fail" else ""))
        return 1 if args.undecided == "fail" else 0
    print(f"no speedup regression: every case within {args.tolerance:g}x of base, or not significantly slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
