"""Time one contender alone, in a process of its own.

Alternating blocks in one process is fair to drift in the machine's load but lets one
contender's thread pools disturb the other's (Numba's OpenMP pool and OpenBLAS's pool
both spin on 2 cores).  A contender in a fresh process has the machine's cores to itself:
that is the figure a user who only runs that library sees.  The parent calls
:func:`time_in_own_process`; the child is ``python -m fastnn.bench.isolated NAME ...``,
which prints ``{batch: Timing as a dict}`` as JSON on its last line.
"""
import argparse
import json
import subprocess
import sys

from ..threads import environment_without_defaults
from .steps import CONTENDERS, make_contender
from .timing import Timing, interleave


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m fastnn.bench.isolated",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("--batches", required=True,
                        type=lambda s: [int(b) for b in s.split(",") if b])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block-seconds", type=float, default=0.06)
    parser.add_argument("--min-calls", type=int, default=3)
    parser.add_argument("--block-calls", type=int, default=None,
                        help="fixed calls per block (default: sized by --block-seconds)")
    parser.add_argument("--threads", type=int, default=0, help="Numba/BLAS threads (0: all)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    if args.threads:
        import numba
        from threadpoolctl import threadpool_limits
        numba.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    timings = {}
    for batch in args.batches:
        contender = make_contender(args.contender, batch)
        timing = interleave([contender], args.rounds, args.block_seconds, args.min_calls,
                            args.block_calls)[contender.name]
        timings[batch] = timing.to_dict()
        del contender           # free this batch's buffers before the next is built
    print(json.dumps(timings))
    return 0


def time_in_own_process(name, batches, rounds=7, block_seconds=0.06, min_calls=3,
                        block_calls=None, threads=0, timeout=1800):
    """``{batch: Timing}`` of contender ``name``, measured in a fresh Python process.

    Raises RuntimeError with the child's last error lines if it fails.
    """
    command = [sys.executable, "-m", "fastnn.bench.isolated", name,
               "--batches", ",".join(map(str, batches)), "--rounds", str(rounds),
               "--block-seconds", str(block_seconds), "--min-calls", str(min_calls),
               "--threads", str(threads)]
    if block_calls:
        command += ["--block-calls", str(block_calls)]
    # A baseline runs as its users run it: without fastnn's thread-pool defaults (these
    # shorten OpenBLAS's spin, which costs a NumPy-only loop of small products ~10%).
    env = None if name.startswith(("fastnn", "numpy-backend")) else environment_without_defaults()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"timing {name!r} in its own process failed:\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {int(batch): Timing.from_dict(t) for batch, t in result.items()}


if __name__ == "__main__":
    sys.exit(main())
