"""The sections of ``fastnn bench``: each one table, runnable alone (``--only NAME``).

A section is a generator of :class:`~fastnn.bench.report.Result` rows, measured one
at a time so the runner can print each row as soon as it exists.
"""
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from ..kernels.activations import ACTIVATIONS
from .attention_cases import ATTENTION_SHAPES, DIRECTIONS, attention_case
from .cases import (ADAM_TARGETS, BATCHES, activation_case, adam_case, dense_case, dropout_case,
                    embedding_case, gemm_cases, loss_case, norm_case, optimizer_case)
from .isolated import time_in_own_process
from .report import Result
from .steps import (BN_DROPOUT, COEXISTING_MATMUL, OPTIONAL, CoexistingMatmul, FastnnStep,
                    TorchStep, available, library_version, make_contender, step_flops)
from .timing import Contender, compare, interleave, threads

#: Issue 9's training-step targets against the hand-written NumPy step, by batch size.
NUMPY_STEP_TARGETS = {32: 2.0, 128: 1.4, 2048: 1.15}
#: The batch sizes of the training step with Adam (issue 10).
ADAM_STEP_BATCHES = (32, 128, 2048)
#: The batch sizes of the training step with BatchNorm + dropout hidden layers (issue 10).
BN_STEP_BATCHES = (32, 128, 2048)
#: The batch sizes of the coexistence section, and its target: at most 10% slower.
COEXISTENCE_BATCHES = (32, 128)
COEXISTENCE_MAX_SLOWDOWN = 1.10


@dataclass
class Context:
    """What every section needs: the run's settings, the measured peak, an output stream.

    ``rounds``: timed blocks per contender.  Kernel blocks last ~``kernel_block_seconds``;
    training-step blocks ~``step_block_seconds`` with at least ``step_min_calls`` steps
    (40 steps at B = 32; 3 at B = 2048).  ``batches`` (optional) restricts the batch sizes
    of the dense, loss, training and coexistence sections.  ``own_process``: also time
    each training-step contender in a fresh process.
    """
    quick: bool = False
    rounds: int = 7
    threads: int = 2
    batches: tuple = None
    kernel_block_seconds: float = 0.02
    step_block_seconds: float = 0.06
    step_min_calls: int = 3
    own_process: bool = True
    peak_gflops: float = None
    stream: object = sys.stdout
    extras: dict = field(default_factory=dict)

    def say(self, text):
        print(text, file=self.stream, flush=True)

    def batches_or(self, default):
        return list(default if self.batches is None else self.batches)

    def describe(self):
        return (f"block means over {self.rounds} rounds of alternating blocks (kernels "
                f"~{self.kernel_block_seconds * 1e3:.0f} ms per block; training steps "
                f"~{self.step_block_seconds * 1e3:.0f} ms, at least {self.step_min_calls} "
                "steps), one warm-up block per contender discarded; ratio of block means, "
                "medians of single calls beside")


# --------------------------------------------------------------------------- kernels
def kernel_result(ctx, case, n_threads):
    """A kernel case: Numba backend against NumPy backend, alternating blocks."""
    with threads(n_threads):
        fast, base = compare(case.run["numba"], case.run["numpy"], ctx.rounds,
                             ctx.kernel_block_seconds)
    return Result.from_timings(case.group, case.name, case.shape, n_threads, fast, base,
                               flops=case.flops, peak_gflops=ctx.peak_gflops,
                               target=case.target)


def gemm_section(ctx):
    for case, n_threads in gemm_cases(ctx.quick):
        yield kernel_result(ctx, case, n_threads)


def dense_section(ctx):
    for direction in ("forward", "backward"):
        for batch in ctx.batches_or(BATCHES):
            yield kernel_result(ctx, dense_case(direction, batch), ctx.threads)


def activation_section(ctx):
    for name in ACTIVATIONS:
        for direction in ("forward", "backward"):
            yield kernel_result(ctx, activation_case(name, direction), ctx.threads)


def loss_section(ctx):
    for batch in ctx.batches_or(BATCHES):
        yield kernel_result(ctx, loss_case("softmax_xent", batch), ctx.threads)


def optimizer_section(ctx):
    for momentum in (True, False):
        yield kernel_result(ctx, optimizer_case(momentum, 784 * 512), ctx.threads)
    # Adam: fastnn.Adam.step() against the careful NumPy user's Adam, then PyTorch's
    # foreach Adam (each contender updates its own copy of the parameter)
    case = adam_case()
    labels = {"numpy": "numpy (hand-written)"}
    if "torch" in case.run:
        labels["torch"] = f"torch {library_version('torch')} foreach"
    else:
        ctx.say(f"{OPTIONAL['torch']} is not installed: no torch row for Adam")
    for name, label in labels.items():
        with threads(ctx.threads):
            fast, base = compare(case.run["numba"], case.run[name], ctx.rounds,
                                 ctx.kernel_block_seconds)
        yield Result.from_timings(case.group, case.name, case.shape, ctx.threads, fast, base,
                                  baseline=label, target=ADAM_TARGETS[name])


def norm_section(ctx):
    """BatchNorm1d and LayerNorm forward+backward, and dropout forward+backward, at
    (2048, 512) float32: against the careful NumPy user (targets 2x, 3x for dropout) and
    PyTorch's functional ops with autograd (target 1.2x; dropout without a target)."""
    with_torch = available("torch")
    if not with_torch:
        ctx.say(f"{OPTIONAL['torch']} is not installed: no torch rows in the norm table")
    label = f"torch {library_version('torch')}" if with_torch else ""
    for make in (lambda: norm_case("batch_norm", torch=with_torch),
                 lambda: norm_case("layer_norm", torch=with_torch),
                 lambda: dropout_case(torch=with_torch)):
        case = make()           # one case's arrays at a time
        with threads(ctx.threads):
            timings = interleave([Contender(name, fn) for name, fn in case.run.items()],
                                 ctx.rounds, ctx.kernel_block_seconds)
        for name, baseline, target in (("numpy", "numpy (hand-written)", case.target),
                                       ("torch", label, case.data["torch_target"])):
            if name in timings:
                yield Result.from_timings(case.group, case.name, case.shape, ctx.threads,
                                          timings["numba"], timings[name], baseline=baseline,
                                          target=target)


def sequence_section(ctx):
    """The embedding lookup and its table gradient for a (32, 128) batch of token ids
    and a (10000, 256) float32 table: fastnn's kernels against fancy indexing and
    ``np.add.at`` (target >= 3x on the backward)."""
    for direction in ("forward", "backward", "forward+backward"):
        yield kernel_result(ctx, embedding_case(direction), ctx.threads)


def attention_section(ctx):
    """Scaled dot-product attention, forward + backward and forward alone, float32, on
    issue 11's shapes (8, 8, 512, 64) and (1, 8, 2048, 64), causal and not: fastnn,
    the careful NumPy user and PyTorch eager ``F.scaled_dot_product_attention`` with
    autograd, interleaved in one run (targets on forward + backward: 3x NumPy, 1.5x
    PyTorch)."""
    with_torch = available("torch")
    if not with_torch:
        ctx.say(f"{OPTIONAL['torch']} is not installed: no torch rows in the attention table")
    labels = {"numpy": "numpy (hand-written)"}
    if with_torch:
        labels["torch"] = f"torch {library_version('torch')}"
    for shape in ATTENTION_SHAPES:
        for causal in (False, True):
            for direction in reversed(DIRECTIONS):
                case = attention_case(direction, shape, causal, torch=with_torch)
                with threads(ctx.threads):
                    timings = interleave([Contender(name, fn) for name, fn in case.run.items()],
                                         ctx.rounds, ctx.kernel_block_seconds)
                for name, label in labels.items():
                    if name in timings:
                        yield Result.from_timings(
                            case.group, case.name, case.shape, ctx.threads, timings["numba"],
                            timings[name], flops=case.flops, peak_gflops=ctx.peak_gflops,
                            baseline=label, target=case.data["targets"][name])
                del case, timings


# --------------------------------------------------------------------------- training step
def _step_baselines():
    """The training step's baselines in table order: ``{name: (label, target(batch))}``."""
    def version(name):
        return library_version(name) if available(name) else ""
    return {
        "numpy": ("numpy (hand-written)", NUMPY_STEP_TARGETS.get),
        "numpy-backend": ("fastnn numpy backend", lambda batch: None),
        "torch": (f"torch {version('torch')} eager", lambda batch: 1.0),
        "jax": (f"jax {version('jax')} jit", lambda batch: 1.0),
    }


def _available_baselines(ctx):
    baselines = _step_baselines()
    for name in list(baselines):
        if not available(name):
            ctx.say(f"{OPTIONAL[name]} is not installed: no {name} rows in the training table")
            del baselines[name]
    return baselines


def _step_result(ctx, batch, label, target, fastnn, baseline, mode):
    return Result.from_timings("training step", "mlp 784-512-256-10", f"B={batch}",
                               ctx.threads, fastnn, baseline, flops=step_flops(batch),
                               peak_gflops=ctx.peak_gflops, baseline=label, target=target,
                               mode=mode)


def _own_process(ctx, names, batches):
    """``{name: {batch: Timing}}`` for every contender that ran in its own process."""
    timings = {}
    for name in names:
        try:
            timings[name] = time_in_own_process(
                name, batches, ctx.rounds, ctx.step_block_seconds, ctx.step_min_calls,
                threads=ctx.threads)
        except RuntimeError as exc:
            ctx.say(f"warning: {exc}")
    return timings


def training_section(ctx):
    """fastnn's step against every baseline, per batch size: alternating blocks in this
    process, then each contender alone in a process of its own."""
    baselines = _available_baselines(ctx)
    batches = ctx.batches_or(BATCHES)
    for batch in batches:
        fastnn = make_contender("fastnn", batch)
        for name, (label, target) in baselines.items():
            other = make_contender(name, batch)
            with threads(ctx.threads):
                timings = interleave([fastnn, other], ctx.rounds, ctx.step_block_seconds,
                                     ctx.step_min_calls)
            yield _step_result(ctx, batch, label, target(batch), timings["fastnn"],
                               timings[name], "interleaved")
            del other
    if not ctx.own_process:
        return
    own = _own_process(ctx, ["fastnn", *baselines], batches)
    for batch in batches:
        for name, (label, target) in baselines.items():
            if "fastnn" in own and name in own:
                yield _step_result(ctx, batch, label, target(batch), own["fastnn"][batch],
                                   own[name][batch], "own process")


def adam_training_section(ctx):
    """The same training step with Adam (PyTorch's defaults, lr 1e-3): fastnn against
    PyTorch eager's ``torch.optim.Adam``, alternating blocks, per batch size."""
    if not available("torch"):
        ctx.say(f"{OPTIONAL['torch']} is not installed: no Adam training-step table")
        return
    label = f"torch {library_version('torch')} eager"
    for batch in ctx.batches_or(ADAM_STEP_BATCHES):
        fastnn = Contender("fastnn", FastnnStep(batch, "numba", optimizer="adam"))
        torch = Contender("torch", TorchStep(batch, threads=ctx.threads, optimizer="adam"))
        with threads(ctx.threads):
            timings = interleave([fastnn, torch], ctx.rounds, ctx.step_block_seconds,
                                 ctx.step_min_calls)
        yield Result.from_timings("training step (Adam)", "mlp 784-512-256-10", f"B={batch}",
                                  ctx.threads, timings["fastnn"], timings["torch"],
                                  flops=step_flops(batch), peak_gflops=ctx.peak_gflops,
                                  baseline=label, target=1.0, mode="interleaved")


def _torch_pair_section(ctx, fastnn_name, torch_name, table, case, batches, flops, what):
    """fastnn's contender ``fastnn_name`` against PyTorch's ``torch_name`` per batch
    size (target >= 1.0x): alternating blocks in this process, then each alone in a
    process of its own.  ``table``/``case``: the rows' section and case names;
    ``flops(batch)``: the step's matrix-product FLOPs; ``what``: the table, for the
    message when PyTorch is missing."""
    if not available(torch_name):
        ctx.say(f"{OPTIONAL[torch_name]} is not installed: no {what} table")
        return
    label = f"torch {library_version(torch_name)} eager"

    def result(batch, fastnn, torch, mode):
        return Result.from_timings(table, case, f"B={batch}", ctx.threads, fastnn, torch,
                                   flops=flops(batch), peak_gflops=ctx.peak_gflops,
                                   baseline=label, target=1.0, mode=mode)

    for batch in batches:
        fastnn = make_contender(fastnn_name, batch)
        torch = make_contender(torch_name, batch)
        with threads(ctx.threads):
            timings = interleave([fastnn, torch], ctx.rounds, ctx.step_block_seconds,
                                 ctx.step_min_calls)
        yield result(batch, timings[fastnn_name], timings[torch_name], "interleaved")
        del fastnn, torch
    if not ctx.own_process:
        return
    own = _own_process(ctx, [fastnn_name, torch_name], batches)
    if len(own) == 2:
        for batch in batches:
            yield result(batch, own[fastnn_name][batch], own[torch_name][batch],
                         "own process")


def bn_training_section(ctx):
    """The step of the network whose hidden layers are ``Linear(bias=False) ->
    BatchNorm1d -> ReLU -> Dropout(0.2)`` (SGD with momentum 0.9, lr 1e-3, as the training
    section; training mode): fastnn against PyTorch eager with the same layers, per batch
    size.  Target >= 1.0x.  (The dropout masks differ between the libraries; the tests
    check with p = 0 that both compute the same step.)"""
    yield from _torch_pair_section(
        ctx, "fastnn-bn", "torch-bn", "training step (BN+dropout)",
        f"mlp bn+relu+dropout({BN_DROPOUT:g})", ctx.batches_or(BN_STEP_BATCHES), step_flops,
        "BatchNorm + dropout training-step table")


def transformer_training_section(ctx):
    """The step of ``fastnn train --model transformer`` (MNIST rows as a sequence of 28
    tokens, 2 encoder layers of width 64, Adam; :mod:`.transformer_step`) against the same
    model in PyTorch eager, at the command line's batch of 128: an epoch is 469 of these
    steps.  Target >= 1.0x (issue 11)."""
    from .transformer_step import TRANSFORMER_BATCH, transformer_flops
    yield from _torch_pair_section(
        ctx, "fastnn-transformer", "torch-transformer", "training step (transformer)",
        "mnist rows 28x28, 2 layers, d 64, 4 heads", ctx.batches_or((TRANSFORMER_BATCH,)),
        transformer_flops, "transformer training-step table")


# --------------------------------------------------------------------------- coexistence
def _coexistence_result(ctx, batch, with_numpy, alone, mode):
    m, k, n = COEXISTING_MATMUL
    return Result.from_timings(
        "coexistence", "step + NumPy matmul between", f"B={batch}", ctx.threads,
        with_numpy, alone, baseline="fastnn alone", kind="slowdown",
        target=COEXISTENCE_MAX_SLOWDOWN, mode=mode,
        notes=f"np.matmul(({m},{k}) @ ({k},{n}), out=) after every step, not timed")


def coexistence_section(ctx):
    """fastnn's step alone against the same step followed by a NumPy matmul each time
    (only the fastnn calls timed): alternating blocks, then each in its own process."""
    batches = ctx.batches_or(COEXISTENCE_BATCHES)
    for batch in batches:
        alone = make_contender("fastnn", batch)
        # the same step object, so both measure the same model and buffers
        mixed = Contender("fastnn+matmul", alone.fn, between=CoexistingMatmul())
        with threads(ctx.threads):
            timings = interleave([alone, mixed], ctx.rounds, ctx.step_block_seconds,
                                 ctx.step_min_calls)
        yield _coexistence_result(ctx, batch, timings["fastnn+matmul"], timings["fastnn"],
                                  "interleaved")
    if not ctx.own_process:
        return
    own = _own_process(ctx, ["fastnn", "fastnn+matmul"], batches)
    if len(own) == 2:
        for batch in batches:
            yield _coexistence_result(ctx, batch, own["fastnn+matmul"][batch],
                                      own["fastnn"][batch], "own process")


# --------------------------------------------------------------------------- compilation
def compile_times():
    """Seconds for the first training step in a fresh process: ``{"cold": ..., "warm": ...}``
    (an empty Numba cache directory, then the same directory again)."""
    code = ("import time; t = time.perf_counter(); import numpy as np, fastnn as fnn; "
            "from fastnn.bench import training_step_case; "
            "training_step_case(32).run['numba'](); print(time.perf_counter() - t)")
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout
            result[label] = float(out.strip().splitlines()[-1])
    return result


def compile_section(ctx):
    """Not a table: the first-step times go into ``ctx.extras["compile_seconds"]``."""
    seconds = ctx.extras["compile_seconds"] = compile_times()
    ctx.say(f"first training step in a fresh process: {seconds['cold']:.2f} s cold cache "
            f"(target <= 15 s), {seconds['warm']:.2f} s warm cache (target <= 1 s)")
    return iter(())


#: Every section, in the order a full run measures them.
SECTIONS = {
    "gemm": gemm_section,
    "dense": dense_section,
    "activation": activation_section,
    "loss": loss_section,
    "optimizer": optimizer_section,
    "norm": norm_section,
    "sequence": sequence_section,
    "training": training_section,
    "training-adam": adam_training_section,
    "training-bn": bn_training_section,
    "training-transformer": transformer_training_section,
    "coexistence": coexistence_section,
    "attention": attention_section,
    "compile": compile_section,
}
#: Sections whose rows report "% of peak", so the FMA peak is measured for them.
NEEDS_PEAK = {"gemm", "dense", "training", "training-adam", "training-bn", "attention"}
