"""Load test for `make serve` on loopback (not part of the test suite).

`--clients` concurrent clients send requests for `--duration` seconds, at most `--max-requests` in all. Most are
POST /predict with a test-split sentence, checked in full (every model answers, probabilities sum to 1, the label is
their argmax); a share (`--bad-share`) is bad input that must get its 4xx. Prints p50/p99 latency and the errors,
and exits 1 if there was any.

    python scripts/loadtest.py --profile smoke            # starts its own server on a free port, stops it after
    python scripts/loadtest.py --url http://127.0.0.1:8000
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager

import httpx
import numpy as np

BAD_REQUESTS = [  # (body, content type, expected status)
    (json.dumps({"text": ""}), "application/json", 422),
    (json.dumps({"text": "x" * 10_001}), "application/json", 422),
    ('{"text": "unterminated', "application/json", 400),
    (json.dumps({"text": "fine", "models": ["no-such-model"]}), "application/json", 422),
    (b'{"text": "caf\xe9"}', "application/json", 400),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running server; default: start `python -m serve` for --profile")
    where.add_argument("--profile", default="smoke", help="profile to serve when no --url (default: %(default)s)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=5000, help="upper bound on requests sent")
    p.add_argument("--bad-share", type=float, default=0.1, help="share of bad-input requests (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    return p


@contextmanager
def local_server(profile: str):
    """`python -m serve` on a free loopback port, until the block ends; its output (a line per request) goes to a
    log file rather than the screen."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w", prefix="serve-", suffix=".log", delete=False)
    print(f"starting python -m serve --profile {profile} (log: {log.name})", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--profile", profile, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
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


def check_prediction(response: httpx.Response, expected_models: list[str]) -> str | None:
    """None if the answer is right, else what is wrong."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:200]}"
    body = response.json()
    if [r["name"] for r in body["results"]] != expected_models:
        return "wrong set of models in the answer"
    for r in body["results"]:
        probs = np.array(r["probabilities"])
        if abs(probs.sum() - 1) > 1e-3 or r["label"] != body["labels"][int(probs.argmax())] or r["latency_ms"] <= 0:
            return f"inconsistent result for {r['name']}"
    return None


async def run_load(url: str, args) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout,
                                 limits=httpx.Limits(max_connections=args.clients)) as client:
        models = (await client.get("/models")).json()
        texts = [e["text"] for e in (await client.get("/examples")).json()] or ["a fine film"]
        names = [m["name"] for m in models["models"]]
        if not names:
            raise SystemExit(f"the server has no models loaded: {models['missing']}")
        rng = random.Random(0)
        bad = itertools.cycle(BAD_REQUESTS)
        sent, end = 0, time.perf_counter() + args.duration
        good_ms, bad_ms, errors = [], [], []

        async def one_client():
            nonlocal sent
            while time.perf_counter() < end and sent < args.max_requests:
                sent += 1   # one event loop: no lock needed
                is_bad = rng.random() < args.bad_share
                started = time.perf_counter()
                try:
                    if is_bad:
                        body, content_type, status = next(bad)
                        response = await client.post("/predict", content=body, headers={"content-type": content_type})
                        ok = response.status_code == status and isinstance(response.json().get("detail"), str)
                        problem = None if ok else f"bad input got {response.status_code}, expected {status}"
                    else:
                        text = f"{rng.choice(texts)} {rng.randint(0, 10**6)}"   # vary it: no caching can help
                        response = await client.post("/predict", json={"text": text})
                        problem = check_prediction(response, names)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                (bad_ms if is_bad else good_ms).append((time.perf_counter() - started) * 1000)
                if problem:
                    errors.append(problem)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        return {"seconds": time.perf_counter() - started, "good_ms": good_ms, "bad_ms": bad_ms, "errors": errors,
                "models": len(names)}


def report(result: dict, args) -> None:
    good, bad = np.array(result["good_ms"]), np.array(result["bad_ms"])
    total = len(good) + len(bad)
    print(f"{args.clients} clients sending for {args.duration:.0f} s (all answered after {result['seconds']:.1f} s): "
          f"{total} requests ({len(good)} predictions over "
          f"{result['models']} models, {len(bad)} bad inputs), {total / result['seconds']:.1f} requests/s")
    for title, ms in (("predict", good), ("bad input", bad)):
        if len(ms):
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            print(f"  {title:9s} latency ms: p50 {p50:.0f}  p90 {p90:.0f}  p99 {p99:.0f}  max {ms.max():.0f}")
    print(f"  errors: {len(result['errors'])}")
    for problem, count in Counter(result["errors"]).most_common(5):
        print(f"    {count} x {problem}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.url:
        result = asyncio.run(run_load(args.url, args))
    else:
        with local_server(args.profile) as url:
            result = asyncio.run(run_load(url, args))
    report(result, args)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
