"""bench/guard.py, the quiet-machine guard: the load of other processes, windows of rounds, re-measuring."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import types

import psutil
import pytest

from bench import guard
from bench.guard import Sample, WaitBudget, WindowedMonitor, other_load


# --- reading /proc/stat ------------------------------------------------------------------------------------------
def test_sample_parses_proc_stat(monkeypatch):
    # user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  100 20 30 400 50 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    monkeypatch.setattr(guard, "open", lambda path: io.StringIO(line), raising=False)
    s = guard.sample()
    # busy = user + nice + system + irq + softirq + steal; idle and iowait are not busy; guest is inside user
    assert s.busy == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / guard.CLOCK_TICKS)
    times = os.times()
    assert s.own == pytest.approx(times.user + times.system, abs=0.05)
    assert abs(s.wall - time.perf_counter()) < 1


def test_other_load_arithmetic():
    cpus = guard.CPUS
    a = Sample(wall=10.0, busy=100.0, own=5.0)
    # 2 s, others used half the machine, we used 0.3 s of CPU on top
    b = Sample(wall=12.0, busy=100.0 + 0.5 * 2 * cpus + 0.3, own=5.3)
    assert other_load(a, b) == pytest.approx(0.5)
    assert other_load(a, Sample(12.0, 100.2, 5.3)) == 0.0          # clock-tick rounding: never negative
    assert other_load(a, a) == 0.0                                  # no wall time: no division by zero


def test_other_load_matches_an_independent_reading():
    """Over the same window, while this process sleeps, the guard's figure is the machine's busy share as psutil
    reads it (so ~0 on an idle machine, and whatever the other work on this shared machine is otherwise)."""
    before_ps, a = psutil.cpu_times(), guard.sample()
    time.sleep(0.6)
    b, after_ps = guard.sample(), psutil.cpu_times()

    def busy(t):
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    wall = b.wall - a.wall
    reference = (busy(after_ps) - busy(before_ps)) / (wall * guard.CPUS)
    assert other_load(a, b) == pytest.approx(reference, abs=0.1)
    assert 0.0 <= other_load(a, b) <= 1.05


def test_own_work_does_not_count_as_other_load():
    """Our own CPU time is not "other" load. Counted as other, our spin would add ~1/CPUS on a quiet machine; the
    other work on this shared machine fluctuates, so one of three tries must show no such jump."""
    tries = []
    for _ in range(3):
        a = guard.sample()
        time.sleep(0.4)
        b = guard.sample()
        c = guard.sample()
        while time.perf_counter() - c.wall < 0.4:      # one core busy with *our* work
            pass
        d = guard.sample()
        assert d.own - c.own > 0.2                     # we really did use the CPU
        tries.append((other_load(a, b), other_load(c, d)))
        if tries[-1][1] < tries[-1][0] + 0.2:
            break
    assert any(spin < idle + 0.2 for idle, spin in tries), tries


def test_busy_process_is_seen():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend = time.time() + 8\nwhile time.time() < end: pass"])
    try:
        proc = psutil.Process(child.pid)
        time.sleep(0.3)
        cpu_before, a = sum(proc.cpu_times()[:2]), guard.sample()
        time.sleep(1.0)
        b, cpu_after = guard.sample(), sum(proc.cpu_times()[:2])
        load = other_load(a, b)
        child_share = (cpu_after - cpu_before) / ((b.wall - a.wall) * guard.CPUS)
        assert load > 0.3, load
        assert load >= child_share - 0.05, (load, child_share)   # the busy child is inside "other"
    finally:
        child.kill()
        child.wait(timeout=10)


# --- windows of rounds (simulated clock and load) -------------------------------------------------------------------
class FakeMachine:
    """A clock and a /proc/stat whose other-process load we script."""

    def __init__(self):
        self.now = 0.0
        self.busy = 0.0
        self.load = 0.0            # share of the machine other processes use from now on

    def advance(self, seconds: float):
        self.now += seconds
        self.busy += self.load * seconds * guard.CPUS

    def sample(self):
        return Sample(self.now, self.busy, 0.0)

    def install(self, monkeypatch):
        monkeypatch.setattr(guard, "sample", self.sample)
        monkeypatch.setattr(guard, "time", types.SimpleNamespace(perf_counter=lambda: self.now,
                                                                 sleep=self.advance))


def test_windowed_monitor_marks_the_loaded_rounds(monkeypatch):
    machine = FakeMachine()
    machine.install(monkeypatch)
    monitor = WindowedMonitor(window=0.25)
    loads = [0, 0, 0, 0.9, 0.9, 0.9, 0, 0, 0, 0, 0.6]
    for load in loads:
        machine.load = load
        machine.advance(0.1)                       # one round of 0.1 s
        monitor.round_done()
    monitor.close()
    monitor.close()                                # nothing new: no empty window
    assert [(first, end) for first, end, _ in monitor.windows] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert monitor.loads() == pytest.approx([0.0, 0.9, 0.0, 0.3])
    assert monitor.contended_rounds(0.25) == [3, 4, 5, 9, 10]
    assert monitor.contended_rounds(0.5) == [3, 4, 5]


def test_wait_for_quiet_waits_until_quiet_within_budget(monkeypatch):
    machine = FakeMachine()
    machine.install(monkeypatch)
    schedule = iter([0.9, 0.9, 0.9, 0.1])           # other processes' load during each probe

    def probe_sleep(seconds):
        machine.load = next(schedule, 0.1)
        machine.advance(seconds)

    monkeypatch.setattr(guard, "time", types.SimpleNamespace(perf_counter=lambda: machine.now, sleep=probe_sleep))
    budget = WaitBudget(60)
    assert guard.wait_for_quiet(0.25, budget, max_wait=5, probe=0.25) == pytest.approx(0.1)
    assert machine.now == pytest.approx(1.0)      # four probes
    assert budget.left == pytest.approx(59.0)
    # never quiet: stops at the budget, one probe when the budget is spent
    machine.load = 0.9
    monkeypatch.setattr(guard, "time", types.SimpleNamespace(perf_counter=lambda: machine.now,
                                                             sleep=machine.advance))
    small = WaitBudget(1.0)
    assert guard.wait_for_quiet(0.25, small, max_wait=5, probe=0.25) == pytest.approx(0.9)
    assert small.left <= 0
    started = machine.now
    guard.wait_for_quiet(0.25, small, max_wait=5, probe=0.25)
    assert machine.now - started == pytest.approx(0.25)


# --- guarded_benchmark with pytest-benchmark's own fixture ----------------------------------------------------------
# The guard hands its rounds to pytest-benchmark through its public API (the `guarded` marker's timer, pedantic);
# `benchmark.stats` is read here only to check that what pytest-benchmark recorded is the guard's rounds.
class Scripted:
    """fn for the benchmark: calls listed in `slow_calls` run under (simulated) load and take 20 ms, others 2 ms."""

    def __init__(self, slow_calls):
        self.calls = 0
        self.slow_calls = slow_calls
        self.loaded = False

    def __call__(self, arg):
        self.loaded = self.slow_calls(self.calls)
        self.calls += 1
        time.sleep(0.02 if self.loaded else 0.002)
        return arg


def rigged_guard(monkeypatch, fn):
    """One window per round, the window's load = whether fn just ran loaded, no real waiting."""
    waits = []

    class PerRound(WindowedMonitor):
        def __init__(self, window=0.0):
            super().__init__(window=0.0)

    monkeypatch.setattr(guard, "WindowedMonitor", PerRound)
    monkeypatch.setattr(guard, "other_load", lambda a, b: 0.9 if fn.loaded else 0.0)
    monkeypatch.setattr(guard, "wait_for_quiet", lambda threshold, budget, **kw: waits.append(threshold) or 0.0)
    return waits


def require_enabled(benchmark):
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (--benchmark-disable)")


# 2 warm-up calls (0, 1), 1 calibration call (2), then the 10 measured rounds are calls 3..12: rounds 3, 4, 5 are
# calls 6, 7, 8. Re-measurements are calls 13 and later.
@guard.guarded
def test_guarded_benchmark_remeasures_contended_rounds(benchmark, monkeypatch):
    require_enabled(benchmark)
    fn = Scripted(lambda call: call in (6, 7, 8))
    waits = rigged_guard(monkeypatch, fn)
    with pytest.warns(UserWarning, match="3/10 rounds ran while other processes used 90% of the CPU"):
        measured = guard.guarded_benchmark(benchmark, fn, "x", WaitBudget(10), target_seconds=0.01,
                                           warmup_rounds=2, threshold=0.25, max_retries=2, min_rounds=10,
                                           max_rounds=10)
    data = benchmark.stats.stats.data
    assert data == measured.rounds
    assert measured.record == {"rounds": 10, "rounds_remeasured": 3, "contended": False, "other_load_max": 0.9,
                      "other_load_mean": pytest.approx(0.9 * 3 / 13, abs=1e-3), "load_threshold": 0.25}
    assert len(data) == 10 and fn.calls == 16
    assert max(data[3:6]) < 0.015                  # the loaded 20 ms rounds were replaced by clean ones
    assert min(data) > 0.0015
    assert len(waits) == 2                         # once before measuring, once before re-measuring
    assert benchmark.stats.stats.median < 0.015


@guard.guarded
def test_guarded_benchmark_marks_result_when_load_persists(benchmark, monkeypatch):
    require_enabled(benchmark)
    fn = Scripted(lambda call: call in (6, 7, 8) or call >= 13)
    waits = rigged_guard(monkeypatch, fn)
    with pytest.warns(UserWarning) as warned:
        record = guard.guarded_benchmark(benchmark, fn, "x", WaitBudget(10), target_seconds=0.01, warmup_rounds=2,
                                         threshold=0.25, max_retries=2, min_rounds=10, max_rounds=10).record
    messages = [str(w.message) for w in warned]
    assert sum("re-measuring" in m for m in messages) == 2 and "marked contended" in messages[-1]
    assert record["contended"] is True and record["rounds_remeasured"] == 0
    assert fn.calls == 13 + 2 * 3                  # two bounded retries of the three rounds, then it gives up
    assert len(waits) == 3
    assert min(benchmark.stats.stats.data[3:6]) >= 0.02


@guard.guarded
def test_guarded_benchmark_partial_retry(benchmark, monkeypatch):
    require_enabled(benchmark)
    # first retry (calls 13, 14, 15): round 4 is loaded again; second retry (call 16) is clean
    fn = Scripted(lambda call: call in (6, 7, 8, 14))
    rigged_guard(monkeypatch, fn)
    with pytest.warns(UserWarning):
        record = guard.guarded_benchmark(benchmark, fn, "x", WaitBudget(10), target_seconds=0.01, warmup_rounds=2,
                                         threshold=0.25, max_retries=2, min_rounds=10, max_rounds=10).record
    assert record["rounds_remeasured"] == 3 and record["contended"] is False
    assert fn.calls == 17
    assert max(benchmark.stats.stats.data) < 0.015


def test_calibrate_rounds_bounds():
    assert guard.calibrate_rounds(lambda _: time.sleep(0.01), None, target_seconds=0.001, min_rounds=5) == 5
    assert guard.calibrate_rounds(lambda _: None, None, target_seconds=10, max_rounds=300) == 300
    n = guard.calibrate_rounds(lambda _: time.sleep(0.01), None, target_seconds=0.2, min_rounds=1, max_rounds=1000)
    assert 5 <= n <= 20


def test_a_case_not_timed_with_the_guards_clock_is_refused(benchmark, monkeypatch):
    """Without the `guarded` marker pytest-benchmark would time the replay itself (nothing) with its own clock."""
    require_enabled(benchmark)
    fn = Scripted(lambda call: False)
    rigged_guard(monkeypatch, fn)
    with pytest.raises(RuntimeError, match="mark it @guard.guarded"):
        guard.guarded_benchmark(benchmark, fn, "x", WaitBudget(10), target_seconds=0.01, warmup_rounds=0,
                                min_rounds=3, max_rounds=3)
