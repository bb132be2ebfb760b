"""``fastnn bench``: run the sections, print every row, write Markdown and JSON."""
import argparse
import importlib
import sys

from .environment import environment, measure_fma_peak
from .report import console_line, write_report
from .sections import NEEDS_PEAK, SECTIONS, Context

#: Timed blocks per contender: a full run, and ``--quick``.
ROUNDS, QUICK_ROUNDS = 7, 3


def _sections(text):
    """``"gemm,dense"`` -> ``["gemm", "dense"]`` (argparse type for ``--only``)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(SECTIONS)} (comma separated)")
    return names


def _batches(text):
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 32,128, got {text!r}")
    return batches


def add_arguments(parser):
    """The options of ``fastnn bench`` (``fastnn.cli`` builds the parser)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a representative subset of the GEMM shapes and "
                             f"{QUICK_ROUNDS} rounds instead of {ROUNDS}")
    parser.add_argument("--only", type=_sections, default=None, metavar="SECTIONS",
                        help=f"run only these sections, comma separated: "
                             f"{', '.join(SECTIONS)}; writes bench-<sections>.md/json")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed blocks per contender (default 7, --quick 3)")
    parser.add_argument("--batches", type=_batches, default=None, metavar="B,B,...",
                        help="batch sizes of the dense, loss, training and coexistence "
                             "sections (default: each section's own)")
    parser.add_argument("--no-subprocess", dest="own_process", action="store_false",
                        help="skip the own-process timings of the training and "
                             "coexistence sections")
    parser.add_argument("--out", default="bench-results", help="directory for the .md/.json")
    return parser


def run_from_args(args):
    run(quick=args.quick, out_dir=args.out, only=args.only, rounds=args.rounds,
        batches=args.batches, own_process=args.own_process)
    return 0


def import_peers_first():
    """Import PyTorch (when installed) before anything starts Numba's thread pool.

    Both bring GNU OpenMP.  Imported first, PyTorch loads its own copy; imported after
    Numba's pool has started (``numba.get_num_threads()`` starts it), it binds to
    Numba's copy, and its ``scaled_dot_product_attention`` ran 3-5x slower here
    (Xeon, 2 threads, torch 2.13): the baseline would look far slower than users see
    it.  A user who imports torch first gets the fast case, so the bench measures that.
    """
    try:
        importlib.import_module("torch")
    except ImportError:
        pass


def run(quick=False, out_dir="bench-results", only=None, rounds=None, batches=None,
        own_process=True, stream=sys.stdout, **timing):
    """Measure the sections ``only`` (default: all), print each row as it is measured and
    write ``bench.md``/``bench.json`` (``bench-<sections>.*`` for a partial run).

    ``timing`` overrides :class:`~fastnn.bench.sections.Context` fields such as
    ``kernel_block_seconds``, ``step_block_seconds``, ``step_min_calls``.  Returns the
    list of :class:`~fastnn.bench.report.Result`.
    """
    import_peers_first()
    import numba
    names = list(SECTIONS) if only is None else list(only)
    env = environment()
    if env["OPENBLAS_CORETYPE"]:
        print(f"warning: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} forces an older BLAS "
              "kernel; for the honest baseline run\n  env -u OPENBLAS_CORETYPE -u "
              "OPENBLAS_L2_SIZE fastnn bench", file=stream)
    print(f"kernel path: {env['kernel_path']}\nCPU: {env['cpu']}; BLAS {env['blas']}",
          file=stream)
    ctx = Context(quick=quick, rounds=rounds or (QUICK_ROUNDS if quick else ROUNDS),
                  threads=numba.get_num_threads(), batches=batches, own_process=own_process,
                  stream=stream, **timing)
    peak = None
    if NEEDS_PEAK & set(names):
        peak = measure_fma_peak()
        ctx.peak_gflops = peak.gflops
        print(peak.label(), file=stream)
    results = []
    for name in names:
        for result in SECTIONS[name](ctx):
            results.append(result)
            print(console_line(result), file=stream, flush=True)
    stem = "bench" if only is None else "bench-" + "-".join(names)
    md_path, json_path = write_report(results, env, out_dir, stem, peak, ctx.describe(),
                                      ctx.extras)
    met = [r.met for r in results if r.met is not None]
    print(f"{sum(met)}/{len(met)} targets met; wrote {md_path} and {json_path}", file=stream)
    return results
