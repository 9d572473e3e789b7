"""`python -m serve`: load a profile's models once, then serve the comparison page and API with uvicorn."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from distill import runs
from distill.errors import UserError

from .models import DEFAULT_BACKENDS, REFERENCES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbtb serve", description="A web page and JSON API comparing the teacher "
                                "with every student of a run, one text or a batch at a time.")
    runs.add_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--artifacts", default="artifacts", help="artifact root (default: %(default)s)")
    p.add_argument("--reports", default="reports", help="report root (default: %(default)s)")
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                   help="exported backends to serve beside the native models, if `make bench` exported them "
                   "(comma-separated; '' for none; default: %(default)s)")
    p.add_argument("--reference", choices=REFERENCES, default="auto",
                   help="backend of the teacher every model is compared with; auto (default): its ORT-optimised or "
                   "ONNX export when `mbtb export` validated one (the same probabilities, faster), else PyTorch eager")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of one model call (PyTorch and ONNX Runtime; default: %(default)s): with 1, "
                   "concurrent requests run on different cores; more lowers one lone request's latency")
    p.add_argument("--package", help="serve this package (a folder made by `mbtb package`) instead of a run")
    return p


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    try:
        args.profile = runs.run_name(args.profile, args.data, args.name)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch
    import uvicorn

    from .app import create_app
    from .models import load_profile

    torch.set_num_threads(args.threads)   # before loading: ONNX Runtime sessions take torch's thread count

    print(f"package {args.package}: loading" if args.package else
          f"profile {args.profile}: loading models from {args.artifacts}/{args.profile}", flush=True)
    try:
        backends = tuple(b for b in args.backends.split(",") if b)
        if args.package:
            from .package import load_package
            loaded = load_package(args.package, args.threads, log=lambda line: print(line, flush=True))
        else:
            loaded = load_profile(args.profile, args.artifacts, args.reports,
                                  log=lambda line: print(line, flush=True), backends=backends,
                                  reference=args.reference)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(loaded.predictors)} model(s) loaded, {len(loaded.missing)} missing", flush=True)
    if not is_loopback(args.host):
        print(f"warning: binding {args.host} makes the page reachable from other machines", file=sys.stderr)
    concurrency = max(1, (os.cpu_count() or 1) // args.threads)   # call slots per model: one per core
    app = create_app(loaded.predictors, loaded.examples, loaded.labels, loaded.missing, loaded.profile, concurrency)
    print(f"serving http://{args.host}:{args.port}/  (API docs: http://{args.host}:{args.port}/docs); each model runs "
          f"up to {concurrency} call(s) at once on {args.threads} thread(s) each", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
