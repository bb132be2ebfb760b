"""The kernel cases of ``fastnn bench``: one operation, run by fastnn's Numba backend
and by the NumPy/BLAS backend on the same prepared data.

``case.run["numba"]()`` and ``case.run["numpy"]()`` perform the operation; the asv
suites and the pytest-benchmark tests use the same cases.  The section functions in
:mod:`.sections` build them lazily, one at a time, so a large GEMM's arrays are freed
before the next case is built.
"""
from dataclasses import dataclass

import numpy as np

from .steps import MLP_WIDTHS, FastnnStep, TorchStep, step_flops

#: Batch sizes of the dense-layer, loss and training-step cases.
BATCHES = (1, 32, 128, 512, 2048)


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
    from ..backends import get_backend
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
    from ..backends import get_backend
    from ..kernels.activations import ACTIVATIONS
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
    from ..backends import get_backend
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
    from ..backends import get_backend
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
    from ..backends import get_backend
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


#: The Adam targets of issue 10 on a 784x512 float32 parameter: against the careful
#: NumPy user's Adam, and against PyTorch's foreach Adam.
ADAM_TARGETS = {"numpy": 3.0, "torch": 1.5}


def adam_case(size=784 * 512, dtype=np.float32, lr=1e-3, torch=True):
    """One Adam step on a parameter of ``size`` elements: ``run["numba"]`` is
    :class:`fastnn.Adam`'s ``step()`` (the public API: one fused kernel), ``run["numpy"]``
    the careful NumPy user's Adam (:class:`.optimizers.NumpyAdam`), ``run["torch"]``
    ``torch.optim.Adam(foreach=True)`` when PyTorch is importable (and ``torch``).  Each
    has its own copy of the same parameter and gradient; ``data[name]`` is that
    contender's parameter."""
    from .. import Adam, Parameter
    from .optimizers import NumpyAdam, TorchAdam
    rng = _rng()
    start = rng.standard_normal(size).astype(dtype)
    grad = (rng.standard_normal(size) * 1e-3).astype(dtype)
    param = Parameter(start.copy())
    param.grad[...] = grad
    fastnn_adam = Adam([param], lr=lr)
    numpy_adam = NumpyAdam(start.copy(), lr=lr)
    run = {"numba": fastnn_adam.step, "numpy": lambda: numpy_adam.step(grad)}
    data = {"numba": param.data, "numpy": numpy_adam.param}
    try:
        torch_adam = TorchAdam(start.copy(), grad.copy(), lr=lr) if torch else None
    except ImportError:
        torch_adam = None
    if torch_adam is not None:
        run["torch"], data["torch"] = torch_adam.step, torch_adam.param
    return Case("optimizer", "adam", str(size), run, target=ADAM_TARGETS["numpy"], data=data)


def _add_torch(run, make):
    """``run["torch"] = make()`` unless PyTorch cannot be imported."""
    try:
        run["torch"] = make()
    except ImportError:
        pass


#: The shape of the normalisation and dropout cases: (rows, features).
NORM_SHAPE = (2048, 512)


def norm_case(kind, shape=NORM_SHAPE, dtype=np.float32, target=2.0, torch_target=1.2,
              torch=False):
    """LayerNorm (``kind="layer_norm"``) or BatchNorm in training mode (``"batch_norm"``):
    forward then backward (``dx``, ``dgamma``, ``dbeta``) on preallocated arrays.

    ``run["numba"]``: fastnn's kernels; ``run["numpy"]``: the careful NumPy user's version
    (:mod:`.norm_baselines`); ``run["torch"]`` (with ``torch``, when PyTorch is
    importable): ``torch.nn.functional`` with autograd.  Each returns ``(y, dx, dgamma,
    dbeta)``; ``data["torch_target"]`` is the target against PyTorch."""
    from ..backends import get_backend
    from . import norm_baselines as nb
    rng = _rng()
    rows, n = shape
    x = rng.standard_normal(shape).astype(dtype) * dtype(2) + dtype(0.5)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = (1 + 0.1 * rng.standard_normal(n)).astype(dtype)
    beta = (0.1 * rng.standard_normal(n)).astype(dtype)
    ops = get_backend("numba")
    y, dx = np.empty_like(x), np.empty_like(x)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(beta)
    if kind == "layer_norm":
        mean, rstd = np.empty(rows, dtype), np.empty(rows, dtype)

        def fastnn_run():
            ops.layer_norm_forward(x, gamma, beta, nb.EPS, y, mean, rstd)
            ops.layer_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, False)
            return y, dx, dgamma, dbeta
        handwritten = nb.NumpyLayerNorm(x, gamma, beta, dy)
    elif kind == "batch_norm":
        mean, rstd = np.empty(n, dtype), np.empty(n, dtype)
        running_mean, running_var = np.zeros(n, dtype), np.ones(n, dtype)

        def fastnn_run():
            ops.batch_norm_forward_train(x, gamma, beta, nb.EPS, nb.MOMENTUM, running_mean,
                                         running_var, y, mean, rstd)
            ops.batch_norm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, False)
            return y, dx, dgamma, dbeta
        handwritten = nb.NumpyBatchNorm(x, gamma, beta, dy)
    else:
        raise ValueError(f"unknown normalisation {kind!r}; choose layer_norm or batch_norm")
    run = {"numba": fastnn_run, "numpy": handwritten}
    if torch:
        _add_torch(run, lambda: nb.TorchNorm(kind, x, gamma, beta, dy))
    return Case("norm", f"{kind} forward+backward", "x".join(map(str, shape)), run,
                target=target, data={"torch_target": torch_target})


def dropout_case(shape=NORM_SHAPE, p=0.5, dtype=np.float32, target=3.0, torch=False):
    """Inverted dropout, forward then backward: fastnn's counter-based kernels (the mask
    stored as uint8; ``offset`` advanced by the size each call, as a layer does) against
    NumPy's generator (``rng.random(out=...) < 1 - p``) and, with ``torch``, PyTorch's
    ``functional.dropout`` (when importable).
    Each run returns ``(y, dx, mask)``."""
    from ..backends import get_backend
    from . import norm_baselines as nb
    rng = _rng()
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    ops = get_backend("numba")
    y, dx, mask = np.empty_like(x), np.empty_like(x), np.empty(shape, np.uint8)
    counter = {"offset": 0}

    def fastnn_run():
        ops.dropout_forward(x, p, 0, counter["offset"], y, mask)
        counter["offset"] += x.size
        ops.dropout_backward(dy, mask, p, dx)
        return y, dx, mask
    run = {"numba": fastnn_run, "numpy": nb.NumpyDropout(x, dy, p)}
    if torch:
        _add_torch(run, lambda: nb.TorchDropout(x, dy, p))
    return Case("dropout", f"dropout p={p:g} forward+backward", "x".join(map(str, shape)),
                run, target=target, data={"x": x, "dy": dy, "p": p, "torch_target": None})


#: The embedding case: a (batch, seq) batch of token ids into a (vocabulary, dim) table.
EMBEDDING_SHAPE = {"ids": (32, 128), "table": (10000, 256)}
#: Issue 11's target on the backward (against np.add.at); none on the forward.
EMBEDDING_TARGETS = {"forward": None, "backward": 3.0, "forward+backward": None}


def embedding_case(direction, ids=EMBEDDING_SHAPE["ids"], table=EMBEDDING_SHAPE["table"],
                   dtype=np.float32):
    """The embedding lookup (``"forward"``), its table gradient (``"backward"``: the
    scatter-add of PyTorch's dense gradient, into a zeroed table) or both.

    ``run["numba"]``: fastnn's kernels (``embedding_forward``/``embedding_backward``,
    ``accumulate=False``: unused rows zeroed in the same pass); ``run["numpy"]``: what a
    NumPy user writes, fancy indexing ``W[ids]`` and ``dW[...] = 0; np.add.at(dW, ids,
    dout)``.  Each returns its outputs: ``out``, ``dW`` or ``(out, dW)``.  Ids are drawn
    from a Zipf law (token frequencies: many duplicates) clipped to the vocabulary."""
    from ..backends import get_backend
    rng = _rng()
    n_table, dim = table
    flat = np.minimum(rng.zipf(1.2, int(np.prod(ids))) - 1, n_table - 1).astype(np.int64)
    weight = rng.standard_normal(table).astype(dtype)
    dout = rng.standard_normal((flat.size, dim)).astype(dtype)
    ops = get_backend("numba")
    out, dweight = np.empty((flat.size, dim), dtype), np.empty(table, dtype)
    numpy_dweight = np.empty(table, dtype)

    def fastnn_forward():
        return ops.embedding_forward(weight, flat, out)

    def fastnn_backward():
        return ops.embedding_backward(dout, flat, dweight, False)

    def numpy_forward():
        return weight[flat]

    def numpy_backward():
        numpy_dweight[...] = 0
        np.add.at(numpy_dweight, flat, dout)
        return numpy_dweight

    run = {"forward": {"numba": fastnn_forward, "numpy": numpy_forward},
           "backward": {"numba": fastnn_backward, "numpy": numpy_backward},
           "forward+backward": {"numba": lambda: (fastnn_forward(), fastnn_backward()),
                                "numpy": lambda: (numpy_forward(), numpy_backward())}}
    if direction not in run:
        raise ValueError(f"unknown direction {direction!r}; choose {', '.join(run)}")
    shape = f"ids {ids[0]}x{ids[1]}, table {n_table}x{dim}"
    return Case("sequence", f"embedding {direction}", shape, run[direction],
                target=EMBEDDING_TARGETS[direction],
                data={"weight": weight, "ids": flat, "dout": dout})


def training_step_case(batch, target=None, dtype=np.float32):
    """One SGD-momentum step of the 784-512-256-10 MLP with softmax cross-entropy, on
    fastnn's Numba backend (``run["numba"]``) and its NumPy backend (``run["numpy"]``);
    ``data`` holds the two models."""
    steps = {backend: FastnnStep(batch, backend, dtype) for backend in ("numba", "numpy")}
    return Case("training step", "mlp 784-512-256-10", f"B={batch}", dict(steps),
                step_flops(batch), target,
                data={backend: step.model for backend, step in steps.items()})


def torch_step_case(batch):
    """The same training step in PyTorch eager (CPU); ImportError without PyTorch."""
    return TorchStep(batch)


def gemm_cases(quick=False):
    """The three products of every dense layer of the MLP at B = 1, 32, 128, 2048 and
    squares 256-2048, in the three layouts, on 1 and 2 threads (``quick``: B = 128 and
    512^3 only), as ``(case, threads)``."""
    layers = list(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:]))
    # issue 9: at least OpenBLAS's speed on 1 and 2 threads, every layout and batch size
    for n_threads, target, small_target in ((1, 1.0, 1.0), (2, 1.0, 1.0)):
        for layout in ("nn", "nt", "tn"):
            for batch in (128,) if quick else (1, 32, 128, 2048):
                for fan_in, fan_out in layers:
                    # the three products of a dense layer, as (m, k) @ (k, n)
                    m, k, n = {"nn": (batch, fan_in, fan_out),       # X @ W
                               "nt": (batch, fan_out, fan_in),       # dY @ W.T
                               "tn": (fan_in, batch, fan_out)}[layout]   # X.T @ dY
                    yield gemm_case(layout, m, k, n,
                                    target=small_target if batch <= 32 else target), n_threads
            for size in (512,) if quick else (256, 512, 1024, 2048):
                yield gemm_case(layout, size, size, size, target=target), n_threads
