"""Quiet-machine guard: notice when other processes steal CPU during a measurement, and re-measure.

The load of *other* processes is the machine's busy CPU time (/proc/stat) minus this process's own CPU time, as a
fraction of all cores over the wall-clock window. A benchmark's rounds are grouped into short windows; rounds in a
window whose other-load exceeds the threshold are dropped and re-measured once the machine is quiet again (bounded
retries). If they cannot be re-measured cleanly the result is kept but marked `contended`.

pytest-benchmark records the rounds through its public API only: a guarded case carries the `guarded` marker, which
sets its documented per-test `timer` option to `CLOCK.read`, and `benchmark.pedantic` times `CLOCK.replay`, one
measured round per pedantic round. Its statistics, table, comparisons and JSON are then those of the guard's rounds.
"""
from __future__ import annotations

import os
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import pytest

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


@dataclass
class Sample:
    wall: float
    busy: float   # machine-wide busy CPU seconds
    own: float    # this process's CPU seconds (all threads)


def sample() -> Sample:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / CLOCK_TICKS              # guest time is already inside user time
    times = os.times()
    return Sample(time.perf_counter(), busy, times.user + times.system)


def other_load(a: Sample, b: Sample) -> float:
    """Share of the machine (0..1) used by other processes between two samples."""
    wall = b.wall - a.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((b.busy - a.busy) - (b.own - a.own)) / (wall * CPUS))


class WaitBudget:
    """Seconds a whole benchmark session may spend waiting for quiet, so a machine that never calms down costs a
    bounded delay (then results are marked, not re-measured)."""

    def __init__(self, seconds: float = 120.0):
        self.left = seconds


def wait_for_quiet(threshold: float, budget: WaitBudget, max_wait: float = 5.0, probe: float = 0.25) -> float:
    """Sleep in `probe`-second steps until other processes use less than `threshold` of the machine."""
    started = time.perf_counter()
    deadline = started + min(max_wait, max(0.0, budget.left))
    while True:
        a = sample()
        time.sleep(probe)
        load = other_load(a, sample())
        if load < threshold or time.perf_counter() >= deadline:
            budget.left -= time.perf_counter() - started
            return load


class WindowedMonitor:
    """Splits a sequence of timed rounds into windows of at least `window` seconds and records each one's load."""

    def __init__(self, window: float = 0.2):
        self.window = window
        self.windows: list[tuple[int, int, float]] = []  # (first round, end round exclusive, other load)
        self.rounds = 0
        self._start = sample()
        self._first = 0

    def round_done(self):
        self.rounds += 1
        if time.perf_counter() - self._start.wall >= self.window:
            self.close()

    def close(self):
        if self.rounds > self._first:
            now = sample()
            self.windows.append((self._first, self.rounds, other_load(self._start, now)))
            self._start, self._first = now, self.rounds

    def contended_rounds(self, threshold: float) -> list[int]:
        return [i for first, end, load in self.windows if load > threshold for i in range(first, end)]

    def loads(self) -> list[float]:
        return [load for *_, load in self.windows]


def calibrate_rounds(fn, arg, target_seconds: float, min_rounds: int = 5, max_rounds: int = 2000) -> int:
    started = time.perf_counter()
    fn(arg)
    once = max(time.perf_counter() - started, 1e-6)
    return int(min(max_rounds, max(min_rounds, target_seconds / once)))


class ReplayClock:
    """A clock that stands still but while `replay` runs, when it moves on by the next round the guard measured."""

    def __init__(self):
        self.now = 0.0
        self.rounds: deque[float] = deque()
        self.reads = 0

    def read(self) -> float:
        self.reads += 1
        return self.now

    def replay(self) -> None:
        self.now += self.rounds.popleft()

    def hand_over(self, benchmark, rounds: list[float]) -> None:
        """Have pytest-benchmark record `rounds` as its own: one pedantic round each, timed with this clock."""
        self.rounds = deque(rounds)   # what an earlier case left, had it failed half-way, is dropped
        reads = self.reads
        benchmark.pedantic(self.replay, rounds=len(rounds), warmup_rounds=0, iterations=1)
        if self.reads - reads != 2 * len(rounds):
            raise RuntimeError(f"{benchmark.name} is not timed with the guard's clock; mark it @guard.guarded")


CLOCK = ReplayClock()
guarded = pytest.mark.benchmark(timer=CLOCK.read)   # what every case that calls guarded_benchmark carries


@dataclass
class Guarded:
    """A guarded measurement: its record (bench.json's extra_info.guard) and the rounds' times in seconds."""
    record: dict = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)


def timed_rounds(fn, arg, rounds: int, monitor: WindowedMonitor) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - started)
        monitor.round_done()
    monitor.close()
    return times


def guarded_benchmark(benchmark, fn, arg, budget: WaitBudget, target_seconds=1.0, warmup_rounds=2, threshold=0.25,
                      max_retries=2, min_rounds=5, max_rounds=2000) -> Guarded:
    """Time `fn(arg)` in rounds, re-measuring rounds taken under load, and hand the rounds to pytest-benchmark (the
    case must be marked `guarded`)."""
    for _ in range(warmup_rounds):
        fn(arg)
    if benchmark.disabled:
        benchmark(fn, arg)
        return Guarded()
    measured = guarded_rounds(fn, arg, budget, target_seconds, threshold, max_retries, min_rounds, max_rounds,
                              name=benchmark.name)
    CLOCK.hand_over(benchmark, measured.rounds)
    return measured


def guarded_rounds(fn, arg, budget: WaitBudget, target_seconds=1.0, threshold=0.25, max_retries=2, min_rounds=5,
                   max_rounds=2000, name="") -> Guarded:
    """The guard's rounds of `fn(arg)` (warmed up by the caller), without a pytest-benchmark case of their own."""
    wait_for_quiet(threshold, budget)
    rounds = calibrate_rounds(fn, arg, target_seconds, min_rounds, max_rounds)
    monitor = WindowedMonitor()
    data = timed_rounds(fn, arg, rounds, monitor)
    bad = monitor.contended_rounds(threshold)
    all_loads = monitor.loads()
    remeasured, attempts = 0, 0
    while bad and attempts < max_retries:
        attempts += 1
        warnings.warn(f"{name}: {len(bad)}/{len(data)} rounds ran while other processes used "
                      f"{max(all_loads):.0%} of the CPU; waiting for a quiet machine and re-measuring")
        wait_for_quiet(threshold, budget)
        retry = WindowedMonitor()
        times = timed_rounds(fn, arg, len(bad), retry)
        all_loads += retry.loads()
        still_bad = set(retry.contended_rounds(threshold))
        for j, (i, t) in enumerate(zip(bad, times)):
            if j not in still_bad:
                data[i] = t
                remeasured += 1
        bad = [i for j, i in enumerate(bad) if j in still_bad]
    contended = bool(bad)
    if contended:
        warnings.warn(f"{name}: {len(bad)} rounds still measured under load after {max_retries} "
                      "retries; the result is marked contended")
    return Guarded({"rounds": len(data), "rounds_remeasured": remeasured, "contended": contended,
                    "other_load_max": round(max(all_loads, default=0.0), 3),
                    "other_load_mean": round(sum(all_loads) / max(1, len(all_loads)), 3),
                    "load_threshold": threshold}, data)
