"""A call into native code run in a fresh process, so that a crash there (a segfault in a compiled library) costs
one retry instead of the whole run. NNCF's statistics pass crashed once in CI inside OpenVINO's CPU plugin, on a
machine we could not reproduce it on; in a child process that is a retry, and a second crash one `error:` line."""
from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .errors import UserError

ATTEMPTS = 2


def call_isolated(fn, *args, what: str, fix: str, attempts: int = ATTEMPTS):
    """`fn(*args)` in a fresh (spawned) process; its result or its exception comes back as if called here. A
    process that dies instead (a signal, or an exit without an answer) is tried again, `attempts` times in all,
    then is a UserError saying `what` crashed and the `fix`. `fn` and its arguments must pickle."""
    for attempt in range(1, attempts + 1):
        # spawn, not fork: a forked child inherits the parent's thread pools (torch, OpenVINO) without their threads
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                return pool.submit(fn, *args).result()
            except BrokenProcessPool:
                if attempt == attempts:
                    break
                print(f"warning: {what} crashed its process (native code); trying again in a fresh one",
                      file=sys.stderr)
    raise UserError(f"{what} crashed its process {attempts} times (in native code, not in Python); {fix}")
