"""``fastnn bench``: every performance target, measured against NumPy in the same run.

Each case times a fastnn operation and its NumPy/BLAS baseline interleaved (A, B, A, B,
...) in the same process and reports medians, the ratio baseline/fastnn (> 1 means
fastnn is faster), GFLOP/s where the operation has a FLOP count, and whether the target
ratio is met.  Absolute times on a shared machine are noisy; the ratios are what the
targets are about.  The table is printed and written as Markdown and JSON.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

BATCHES = (1, 32, 128, 512, 2048)


@dataclass
class Result:
    group: str
    case: str
    shape: str
    threads: int
    fastnn_ms: float
    baseline_ms: float
    baseline: str = "numpy"
    gflops: float = None
    peak_pct: float = None
    target: float = None
    notes: str = ""
    ratio: float = field(init=False)
    met: bool = field(init=False)

    def __post_init__(self):
        self.ratio = self.baseline_ms / self.fastnn_ms
        self.met = None if self.target is None else self.ratio >= self.target


def _calls_for(fn, min_time):
    fn()
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or n >= 1 << 20:
            return n
        n *= 2 if elapsed < min_time / 10 else max(2, int(min_time / max(elapsed, 1e-9)) + 1)


def compare(fast, baseline, repeats=7, min_time=0.02, settle=3):
    """Median seconds per call of ``fast`` and ``baseline``, measured interleaved.

    The two alternate in blocks of about ``min_time``; every call is timed on its own and
    the median over all blocks is reported.  When Numba's and OpenBLAS's thread pools
    hand the two cores over at a block switch, the first calls of a block can stall for
    milliseconds; ``settle`` untimed calls and the median keep those stalls out.
    """
    n_fast, n_base = _calls_for(fast, min_time), _calls_for(baseline, min_time)
    t_fast, t_base = [], []
    clock = time.perf_counter
    for _ in range(repeats):
        for fn, n, out in ((fast, n_fast, t_fast), (baseline, n_base, t_base)):
            for _ in range(settle):
                fn()
            for _ in range(n):
                start = clock()
                fn()
                out.append(clock() - start)
    return statistics.median(t_fast), statistics.median(t_base)


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


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                         for i in info) or "unknown"
    except ImportError:
        return "unknown (install threadpoolctl)"


def environment():
    import numba
    env = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
           "numpy": np.__version__, "numba": numba.__version__, "blas": blas_info(),
           "machine": platform.machine(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        env["cpu"] = platform.processor()
    env["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "")
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        pass
    return env


def to_markdown(results, env):
    lines = [f"fastnn benchmark, {env['date']}: {env['cpu']} ({env['cores']} cores), "
             f"Python {env['python']}, NumPy {env['numpy']}, Numba {env['numba']}, "
             f"BLAS {env['blas']}" + (f", PyTorch {env['torch']}" if "torch" in env else ""),
             "",
             f"Peak (measured FMA throughput): {env.get('peak_gflops_per_core', 0):.0f} "
             "GFLOP/s per core, float32.",
             "",
             "| group | case | shape | threads | fastnn ms | baseline ms | baseline | ratio | GFLOP/s | % of peak | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.group} | {r.case} | {r.shape} | {r.threads} | {r.fastnn_ms:.4g} | "
            f"{r.baseline_ms:.4g} | {r.baseline} | {r.ratio:.2f}x | "
            f"{'' if r.gflops is None else f'{r.gflops:.1f}'} | "
            f"{'' if r.peak_pct is None else f'{r.peak_pct:.0f}%'} | "
            f"{'' if r.target is None else f'>= {r.target:g}x'} | "
            f"{'' if r.met is None else ('yes' if r.met else '**no**')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One benchmarked operation: ``run[backend]()`` performs it on prepared data."""
    group: str
    name: str
    shape: str
    run: dict
    flops: float = None
    target: float = None
    threads: int = None
    data: dict = None          # the arrays/models the runs work on, for checking results


def _rng():
    return np.random.default_rng(0)


def gemm_case(layout, m, k, n, dtype=np.float32, target=None):
    """``out = A @ B`` in one of the three training layouts, for an (m, k) @ (k, n) product."""
    from .backends import get_backend
    rng = _rng()
    shapes = {"nn": ((m, k), (k, n)), "nt": ((m, k), (n, k)), "tn": ((k, m), (k, n))}[layout]
    a = rng.standard_normal(shapes[0]).astype(dtype)
    b = rng.standard_normal(shapes[1]).astype(dtype)
    out = np.empty((m, n), dtype)
    op = {"nn": "matmul", "nt": "matmul_nt", "tn": "matmul_tn"}[layout]
    run = {name: (lambda f=getattr(get_backend(name), op): f(a, b, out))
           for name in ("numba", "numpy")}
    return Case("gemm", f"{op}", f"({m},{k})x({k},{n})", run, 2.0 * m * n * k, target)


def activation_case(name, direction, shape=(512, 512), dtype=np.float32, target=1.5):
    from .backends import get_backend
    from .kernels.activations import ACTIVATIONS
    params = tuple(ACTIVATIONS[name].values())
    rng = _rng()
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    out = np.empty(shape, dtype)
    run = {}
    for backend in ("numba", "numpy"):
        be = get_backend(backend)
        y = getattr(be, f"{name}_forward")(x, np.empty(shape, dtype), *params)
        if direction == "forward":
            run[backend] = lambda f=getattr(be, f"{name}_forward"): f(x, out, *params)
        else:
            run[backend] = lambda f=getattr(be, f"{name}_backward"), y=y: f(dy, x, y, out, *params)
    return Case("activation", f"{name}_{direction}", "x".join(map(str, shape)), run,
                target=target)


def dense_case(direction, batch, fan_in=784, fan_out=512, activation="relu",
               dtype=np.float32, target=1.3):
    """The fused dense layer ``y = f(x @ W + b)``: forward (GEMM with bias and activation
    in the epilogue), or backward (``dz``, ``db``, ``dW`` and ``dx``), against the NumPy
    backend's unfused version."""
    from .backends import get_backend
    rng = _rng()
    x = rng.standard_normal((batch, fan_in)).astype(dtype)
    w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype)
    b = (0.1 * rng.standard_normal(fan_out)).astype(dtype)
    y = get_backend("numpy").dense_forward(x, w, b, np.empty((batch, fan_out), dtype),
                                           activation)
    dy = rng.standard_normal((batch, fan_out)).astype(dtype)
    run = {}
    for name in ("numba", "numpy"):
        be = get_backend(name)
        if direction == "forward":
            out = np.empty((batch, fan_out), dtype)
            run[name] = lambda be=be, out=out: be.dense_forward(x, w, b, out, activation)
        else:
            dz, dx = np.empty_like(dy), np.empty_like(x)
            dw, db = np.empty_like(w), np.empty_like(b)

            def backward(be=be, dz=dz, dw=dw, db=db, dx=dx):
                be.dense_backward(dy, x, w, y, dz, dw, db, dx, False, False, activation)
                return dw, db, dx
            run[name] = backward
    flops = 2.0 * batch * fan_in * fan_out * (1 if direction == "forward" else 2)
    return Case("dense", f"{activation} {direction}", f"B={batch} {fan_in}->{fan_out}", run,
                flops, target)


def loss_case(loss, batch, classes=10, dtype=np.float32, target=2.0):
    from .backends import get_backend
    rng = _rng()
    z = rng.standard_normal((batch, classes)).astype(dtype) * 3
    if loss == "softmax_xent":
        t = rng.integers(0, classes, batch)
    else:
        t = rng.random((batch, classes)).astype(dtype)
    grad = np.empty_like(z)
    run = {b: (lambda f=getattr(get_backend(b), loss): f(z, t, grad)) for b in ("numba", "numpy")}
    return Case("loss", loss, f"{batch}x{classes}", run, target=target)


def optimizer_case(momentum, size, dtype=np.float32, target=2.0):
    from .backends import get_backend
    rng = _rng()
    p = rng.standard_normal(size).astype(dtype)
    g = rng.standard_normal(size).astype(dtype) * 1e-3
    v = np.zeros(size, dtype)
    run = {}
    for b in ("numba", "numpy"):
        be = get_backend(b)
        if momentum:
            run[b] = lambda be=be: be.sgd_momentum_update(p, g, v, 1e-3, 0.9, 0.0, False)
        else:
            run[b] = lambda be=be: be.sgd_update(p, g, 1e-3, 0.0)
    return Case("optimizer", "sgd_momentum" if momentum else "sgd", str(size), run,
                target=target, data={"param": p, "velocity": v})


MLP_WIDTHS = (784, 512, 256, 10)


def mlp(seed=0, dtype="float32", widths=MLP_WIDTHS):
    """The benchmark network: Linear/ReLU layers of ``widths`` (784-512-256-10)."""
    from . import Linear, ReLU, Sequential
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Linear(fan_in, fan_out, init="he_normal"))
        if i < len(widths) - 2:
            layers.append(ReLU())
    return Sequential(*layers, seed=seed, dtype=dtype)


def training_step_case(batch, target=None, dtype=np.float32):
    """One SGD-momentum step of the 784-512-256-10 MLP with softmax cross-entropy."""
    from . import SGD, CrossEntropyLoss
    rng = _rng()
    x = rng.random((batch, MLP_WIDTHS[0]), dtype=np.float32).astype(dtype)
    y = rng.integers(0, MLP_WIDTHS[-1], batch)
    run, models = {}, {}
    for backend in ("numba", "numpy"):
        model = models[backend] = mlp(dtype=np.dtype(dtype).name).to(backend)
        opt = SGD(model.parameters(), lr=1e-3, momentum=0.9, backend=backend)
        loss_fn = CrossEntropyLoss()

        def step(model=model, opt=opt, loss_fn=loss_fn, backend=backend):
            logits = model(x)
            _, grad = loss_fn._compute(logits, y, model._last_backend)
            opt.zero_grad()
            model.backward(grad)
            opt.step()
        run[backend] = step
    # forward x @ W and backward dW for every layer, dx for all but the first
    weights = [a * b for a, b in zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])]
    flops = 2.0 * batch * (3 * sum(weights) - weights[0])
    return Case("training step", "mlp 784-512-256-10", f"B={batch}", run, flops, target,
                data=models)


def torch_step_case(batch):
    """The same training step in PyTorch eager (CPU), if PyTorch is installed."""
    import torch
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(MLP_WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = _rng()
    x_np = rng.random((batch, MLP_WIDTHS[0]), dtype=np.float32)
    y_np = rng.integers(0, MLP_WIDTHS[-1], batch)

    def step():
        # From NumPy arrays, as fastnn's step is: conversion is part of the user's cost.
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def fma_peak_gflops(seconds=0.2):
    """Float32 FMA throughput of one core in GFLOP/s, measured: twelve independent vector
    accumulators (enough to hide the FMA latency) in the SIMD type the GEMM uses."""
    import numba
    from .kernels.simd_vectors import lanes, vfma, vsplat, vstore

    @numba.njit
    def fmas(n, x):
        one = vsplat(np.float32(1.0000001))
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = vsplat(x)
        for _ in range(n):
            a0 = vfma(a0, one, one)
            a1 = vfma(a1, one, one)
            a2 = vfma(a2, one, one)
            a3 = vfma(a3, one, one)
            a4 = vfma(a4, one, one)
            a5 = vfma(a5, one, one)
            a6 = vfma(a6, one, one)
            a7 = vfma(a7, one, one)
            a8 = vfma(a8, one, one)
            a9 = vfma(a9, one, one)
            a10 = vfma(a10, one, one)
            a11 = vfma(a11, one, one)
        out = np.empty(64, np.float32)
        vstore(out, 0, vfma(a0, a1, vfma(a2, a3, vfma(a4, a5, vfma(a6, a7, vfma(
            a8, a9, vfma(a10, a11, vsplat(x))))))))
        return lanes(out)

    width = fmas(10, np.float32(0))
    n, best = 1 << 20, 0.0
    while True:
        start = time.perf_counter()
        fmas(n, np.float32(0))
        elapsed = time.perf_counter() - start
        best = max(best, n * 12 * width * 2 / elapsed / 1e9)
        if elapsed > seconds / 4:
            break
        n *= 4
    return best


def compile_times():
    """Seconds for the first training step in a fresh process: (warm cache, cold cache)."""
    import tempfile
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


def gemm_cases():
    cases = []
    layers = list(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:]))
    for n_threads, target, small_target in ((1, 0.95, 1.1), (2, 0.9, 1.1)):
        for layout in ("nn", "nt", "tn"):
            for batch in (1, 32, 128, 2048):
                for fan_in, fan_out in layers:
                    # the three products of a dense layer, as (m, k) @ (k, n)
                    m, k, n = {"nn": (batch, fan_in, fan_out),       # X @ W
                               "nt": (batch, fan_out, fan_in),       # dY @ W.T
                               "tn": (fan_in, batch, fan_out)}[layout]   # X.T @ dY
                    tgt = small_target if batch <= 32 else target
                    case = gemm_case(layout, m, k, n, target=tgt)
                    case.threads = n_threads
                    cases.append(case)
            for size in (256, 512, 1024, 2048):
                case = gemm_case(layout, size, size, size, target=target)
                case.threads = n_threads
                cases.append(case)
    return cases


def all_cases(quick=False):
    """Every target case of the performance issue (``quick``: a representative subset)."""
    from .kernels.activations import ACTIVATIONS
    cases = gemm_cases()
    if quick:
        cases = [c for c in cases if c.shape.startswith(("(128,", "(512,512)"))]
    for direction in ("forward", "backward"):
        for batch in BATCHES:
            cases.append(dense_case(direction, batch))
    for name in ACTIVATIONS:
        for direction in ("forward", "backward"):
            cases.append(activation_case(name, direction))
    for batch in BATCHES:
        cases.append(loss_case("softmax_xent", batch))
    cases += [optimizer_case(True, 784 * 512), optimizer_case(False, 784 * 512)]
    for batch, target in zip(BATCHES, (None, 2.0, 1.4, None, 1.15)):
        cases.append(training_step_case(batch, target))
    return cases


def run(quick=False, out_dir="bench-results", stream=sys.stdout):
    """Measure every case, print the table and write ``bench.md`` and ``bench.json``."""
    import numba
    env = environment()
    if env["OPENBLAS_CORETYPE"]:
        print(f"warning: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} forces an older BLAS "
              "kernel; for the honest baseline run\n  env -u OPENBLAS_CORETYPE -u "
              "OPENBLAS_L2_SIZE fastnn bench", file=stream)
    results = []
    default_threads = numba.get_num_threads()
    env["peak_gflops_per_core"] = peak = fma_peak_gflops()
    print(f"measured float32 FMA peak: {peak:.0f} GFLOP/s per core", file=stream)
    for case in all_cases(quick):
        with threads(case.threads or default_threads):
            fast, base = compare(case.run["numba"], case.run["numpy"])
        gflops = case.flops / fast / 1e9 if case.flops else None
        n_threads = case.threads or default_threads
        r = Result(case.group, case.name, case.shape, n_threads, fast * 1e3, base * 1e3,
                   gflops=gflops, target=case.target,
                   peak_pct=None if gflops is None else 100 * gflops / (peak * n_threads))
        results.append(r)
        print(f"{r.group:14s} {r.case:24s} {r.shape:22s} t={r.threads} "
              f"{r.fastnn_ms:9.4f} ms vs {r.baseline_ms:9.4f} ms  {r.ratio:5.2f}x"
              + (f"  {gflops:6.1f} GFLOP/s ({r.peak_pct:3.0f}% of peak)" if gflops else "")
              + ("" if r.met is None else ("  met" if r.met else "  NOT MET")), file=stream)
    try:
        import torch
        torch.set_num_threads(default_threads)
        for batch in BATCHES:
            ours = training_step_case(batch).run["numba"]
            fast, base = compare(ours, torch_step_case(batch))
            r = Result("training step", "mlp vs PyTorch eager", f"B={batch}", default_threads,
                       fast * 1e3, base * 1e3, baseline=f"torch {torch.__version__}", target=1.0)
            results.append(r)
            print(f"{r.group:14s} {r.case:24s} {r.shape:22s} {r.ratio:5.2f}x vs torch", file=stream)
    except ImportError:
        print("PyTorch not installed: skipping the PyTorch comparison", file=stream)
    compile_s = compile_times()
    print(f"first training step in a fresh process: {compile_s['cold']:.2f} s cold cache "
          f"(target <= 15 s), {compile_s['warm']:.2f} s warm cache (target <= 1 s)", file=stream)
    os.makedirs(out_dir, exist_ok=True)
    markdown = to_markdown(results, env) + (
        f"\nFirst training step in a fresh process (import included): "
        f"{compile_s['cold']:.2f} s with a cold Numba cache (target <= 15 s), "
        f"{compile_s['warm']:.2f} s warm (target <= 1 s).\n")
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump({"environment": env, "compile_seconds": compile_s,
                   "results": [asdict(r) for r in results]}, f, indent=1)
    met = [r.met for r in results if r.met is not None]
    print(f"{sum(met)}/{len(met)} targets met; wrote {out_dir}/bench.md and bench.json",
          file=stream)
    return results
