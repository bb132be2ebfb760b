"""Block timing: what a loop of calls costs, measured the way a user pays for it.

A contender is timed in *blocks* of consecutive calls (enough calls to fill about
``block_seconds``, at least ``min_calls``).  The primary figure is the **block mean**,

    block mean = (time of the block) / (calls in the block),

averaged over the timed blocks: what an epoch of training steps costs, thread-pool stalls
and cache refills included.  The **median of single calls** is kept beside it; it is the
figure a stall cannot move, which is exactly why it is not the headline (on a 2-core
machine the per-call median of a training step hid a 1.6x slowdown that every block paid).

Several contenders are measured in one process by alternating blocks A, B, A, B, ... for
several rounds, so that changes in the machine's load fall on all of them alike.  The
first block of every contender is a warm-up and is discarded (first-touch page faults,
thread-pool start, CPU frequency ramp).
"""
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

#: The clock of every measurement: monotonic, the best resolution the OS offers.
clock = time.perf_counter


@dataclass
class Timing:
    """Seconds per call of one contender, from ``len(block_means)`` timed blocks.

    Attributes
    ----------
    block_calls : int
        Calls per block (the same in every block of this contender).
    block_means : list of float
        For each timed block, its duration / ``block_calls``.
    median : float
        Median duration of the single calls of all timed blocks.
    """
    block_calls: int
    block_means: list
    median: float

    @property
    def mean(self):
        """Mean seconds per call over all timed blocks (= total time / total calls, since
        every block has ``block_calls`` calls)."""
        return math.fsum(self.block_means) / len(self.block_means)

    def to_dict(self):
        return {"block_calls": self.block_calls, "block_means": list(self.block_means),
                "median": self.median, "mean": self.mean}

    @classmethod
    def from_dict(cls, data):
        return cls(int(data["block_calls"]), [float(t) for t in data["block_means"]],
                   float(data["median"]))


@dataclass
class Contender:
    """One thing being timed: ``fn()`` is the timed call.

    ``between()``, if given, runs after every timed call and is *not* timed: the work a
    real program does between our calls (e.g. a NumPy matmul), whose after-effects on
    thread pools and caches the next timed call then pays.
    """
    name: str
    fn: Callable
    between: Optional[Callable] = None


def _run(contender, calls):
    fn, between = contender.fn, contender.between
    for _ in range(calls):
        fn()
        if between is not None:
            between()


def calls_per_block(contender, block_seconds, min_calls=1, max_calls=1 << 20):
    """Calls of ``contender`` that fill about ``block_seconds``, at least ``min_calls``.

    One untimed call first (JIT compilation, allocation), then trial runs of doubling
    length until one lasts a quarter of the block; the per-call time of that run sets the
    block size.  ``between`` is included in the trial, so blocks of a contender with work
    between its calls last about as long in wall time as the others' blocks.
    """
    _run(contender, 1)
    calls = 1
    while True:
        start = clock()
        _run(contender, calls)
        elapsed = clock() - start
        if elapsed >= block_seconds / 4 or calls >= max_calls:
            break
        calls *= 2
    per_call = max(elapsed / calls, 1e-9)
    return int(min(max_calls, max(min_calls, round(block_seconds / per_call))))


def time_block(contender, calls):
    """Durations in seconds of ``calls`` consecutive calls of ``contender.fn``.

    Without ``between`` the clock is read once per call, between calls, so the durations
    add up to the block's wall time exactly: a stall anywhere in the loop is counted.
    With ``between`` each call is bracketed by two reads and the work between is left out.
    """
    fn, between = contender.fn, contender.between
    if between is None:
        stamps = [0.0] * (calls + 1)
        stamps[0] = clock()
        for i in range(1, calls + 1):
            fn()
            stamps[i] = clock()
        return [end - start for start, end in zip(stamps, stamps[1:])]
    durations = [0.0] * calls
    for i in range(calls):
        start = clock()
        fn()
        durations[i] = clock() - start
        between()
    return durations


def interleave(contenders, rounds=7, block_seconds=0.02, min_calls=1, block_calls=None,
               warmup_blocks=1):
    """Time ``contenders`` in alternating blocks; ``{name: Timing}``.

    Parameters
    ----------
    contenders : list of Contender
        Timed in this order within every round: A-block, B-block, ...  A single contender
        is simply timed in ``rounds`` consecutive blocks.
    rounds : int
        Timed blocks per contender.
    block_seconds, min_calls : float, int
        Block size per contender, see :func:`calls_per_block`.
    block_calls : int, optional
        A fixed block size for every contender instead (no sizing calls).
    warmup_blocks : int
        Leading rounds whose blocks are run and discarded.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    sizes = {c.name: block_calls or calls_per_block(c, block_seconds, min_calls)
             for c in contenders}
    block_means = {c.name: [] for c in contenders}
    durations = {c.name: [] for c in contenders}
    for round_ in range(warmup_blocks + rounds):
        for contender in contenders:
            calls = time_block(contender, sizes[contender.name])
            if round_ >= warmup_blocks:
                block_means[contender.name].append(math.fsum(calls) / len(calls))
                durations[contender.name].extend(calls)
    return {name: Timing(sizes[name], block_means[name], float(np.median(durations[name])))
            for name in sizes}


def compare(fast, baseline, rounds=7, block_seconds=0.02, min_calls=1):
    """``(Timing of fast, Timing of baseline)``: two callables timed in alternating blocks."""
    timings = interleave([Contender("fast", fast), Contender("baseline", baseline)],
                         rounds, block_seconds, min_calls)
    return timings["fast"], timings["baseline"]


class threads:
    """Run a block with ``n`` Numba threads and ``n`` BLAS threads."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba
        from threadpoolctl import threadpool_limits
        self._numba = numba.get_num_threads()
        numba.set_num_threads(self.n)
        self._limits = threadpool_limits(self.n)
        return self

    def __exit__(self, *exc):
        import numba
        self._limits.restore_original_limits()
        numba.set_num_threads(self._numba)
