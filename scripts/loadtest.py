"""Load test of `make serve` with locust (headless, scripts/locustfile.py): starts the server on a free loopback
port (or uses --url), runs `--clients` users for `--duration` seconds, and prints p50/p99 and throughput per
endpoint with the machine's load average beside them; writes them to --out (JSON). Exit 1 on any failed request.

    .venv/bin/pip install -r requirements-loadtest.txt          # locust (not in the default install)
    .venv/bin/python scripts/loadtest.py --profile smoke --clients 50 --duration 60
    .venv/bin/python scripts/loadtest.py --profile smoke --with-batch   # + a maximal /batch and /health polling
    .venv/bin/python scripts/loadtest.py --table docs/results/loadtest/*.json   # the README's table from results
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distill.environment import cpu_flags, environment  # noqa: E402

HERE = Path(__file__).resolve().parent


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running server; default: start `python -m serve` for --profile")
    where.add_argument("--profile", default="smoke", help="profile to serve when no --url (default: %(default)s)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default: %(default)s)")
    p.add_argument("--with-batch", action="store_true", help="add one user running maximal /batch requests and one "
                   "polling /health")
    p.add_argument("--serve-cwd", type=Path, default=HERE.parent, help="checkout whose server to start (e.g. a "
                   "worktree of an older revision, to compare)")
    p.add_argument("--serve-args", default="", help="more arguments for `python -m serve`, e.g. \"--backends= "
                   "--reference torch\" (split like a shell would)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--table", type=Path, nargs="+", metavar="JSON", help="print a Markdown table of earlier --out "
                   "files instead of running a test")
    return p


@contextmanager
def local_server(profile: str, cwd: Path, extra_args=()):
    """`python -m serve` on a free loopback port, until the block ends; its output (a line per request) goes to a
    log file rather than the screen."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w", prefix="serve-", suffix=".log", delete=False)
    command = ["-m", "serve", "--profile", profile, "--port", str(port), *extra_args]
    print(f"starting python {shlex.join(command)} (log: {log.name})", flush=True)
    proc = subprocess.Popen([sys.executable, *command],
                            stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with status {proc.returncode} before answering; see {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise SystemExit("the server did not answer /health within 10 minutes")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def run_locust(url: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "stats"
        env = {**os.environ, "LOADTEST_BATCH_USER": "1" if args.with_batch else "0"}
        users = args.clients + (2 if args.with_batch else 0)
        load_before = os.getloadavg()
        started = time.time()
        code = subprocess.call([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                                "-u", str(users), "-r", str(users), "-t", f"{args.duration:.0f}s", "--host", url,
                                "--csv", str(prefix), "--only-summary", "--stop-timeout", "120"], env=env)
        seconds = time.time() - started
        load_after = os.getloadavg()
        with open(f"{prefix}_stats.csv") as f:
            rows = list(csv.DictReader(f))
    endpoints = {r["Name"]: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                             "p50_ms": float(r["50%"]), "p99_ms": float(r["99%"]),
                             "requests_per_s": float(r["Requests/s"])} for r in rows}
    return {"locust_exit": code, "serve_args": args.serve_args, "seconds": round(seconds, 1), "clients": args.clients,
            "with_batch": args.with_batch,
            "load_average_1min": {"before": load_before[0], "after": load_after[0]}, "cpu_count": os.cpu_count(),
            "machine": {"cpu": environment()["cpu"], "cpu_flags": cpu_flags()},
            "endpoints": endpoints}


def table(paths: list[Path]) -> str:
    """One row per result file: throughput and p50/p99 per endpoint, failures and the load average."""
    def cell(endpoints, name, field, fmt="{:,.0f}"):
        return fmt.format(endpoints[name][field]) if name in endpoints else "—"

    rows = ["| result | server arguments | `/predict` req/s | p50 / p99 ms | bad input p50 / p99 ms "
            "| `/health` p50 / p99 ms | errors | 1-min load average (before → after) |",
            "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.loads(path.read_text())
        e = r["endpoints"]
        failures = sum(v["failures"] for k, v in e.items() if k != "Aggregated")
        total = e["Aggregated"]["requests"]
        load = r["load_average_1min"]
        rows.append(f"| {path.stem} | `{r.get('serve_args') or '(default)'}` | "
                    f"{cell(e, '/predict', 'requests_per_s', '{:.1f}')} | "
                    f"{cell(e, '/predict', 'p50_ms')} / {cell(e, '/predict', 'p99_ms')} | "
                    f"{cell(e, '/predict (bad input)', 'p50_ms')} / {cell(e, '/predict (bad input)', 'p99_ms')} | "
                    f"{cell(e, '/health', 'p50_ms')} / {cell(e, '/health', 'p99_ms')} | {failures} of {total:,} | "
                    f"{load['before']:.1f} → {load['after']:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    if args.url:
        result = run_locust(args.url, args)
    else:
        with local_server(args.profile, args.serve_cwd, shlex.split(args.serve_args)) as url:
            result = run_locust(url, args)
    print(f"\n{args.clients} clients for {args.duration:.0f} s; 1-min load average {result['load_average_1min']} "
          f"on {result['cpu_count']} cores")
    print(f"{'endpoint':28s} {'requests':>9s} {'failures':>9s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, e in result["endpoints"].items():
        print(f"{name:28s} {e['requests']:9d} {e['failures']:9d} {e['requests_per_s']:8.1f} {e['p50_ms']:8.0f} "
              f"{e['p99_ms']:8.0f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    failures = sum(e["failures"] for e in result["endpoints"].values())
    return 1 if failures or result["locust_exit"] not in (0, 1) else 0


if __name__ == "__main__":
    sys.exit(main())
