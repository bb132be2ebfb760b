"""``fastnn.warmup()`` / ``fastnn warmup``: compile, once per machine, the kernels that
typical models use, so that no later process waits for Numba's compiler.

fastnn's kernels are compiled by Numba the first time they are called with a new dtype,
and the machine code is written to Numba's on-disk cache, keyed by the CPU (beside the
installed kernels, in the user cache directory when that folder is read-only, or in
``NUMBA_CACHE_DIR``).  A process that finds them there loads them in about a second
instead of compiling for half a minute.  The warm-up fills that cache ahead of time:
run it in a Docker image's build (``RUN fastnn warmup``) or once in a CI job before
the tests, on the machine (CPU) that will train.

What the cache needs to be used later (measured with Numba 0.68): the same CPU name and
features (code for another CPU is never loaded: it compiles again), the same installed
kernel files (fastnn stamps the cache with their modification times and sizes, so a
reinstall compiles again), and a cache directory *writable* by the user who trains:
Numba does not load from a directory it cannot write to (it falls back to the user's
cache directory and compiles there).

It lists no kernels: it trains tiny models through the public API -- ``fit`` with
validation data and a metric, ``evaluate``, ``predict`` -- so it compiles exactly what
models of those kinds compile, and cannot drift from them.  A second run finds every
kernel in the cache and says so.
"""
import time

import numpy as np

from .progress import CompileWatch

#: Rows of the tiny batches; widths are small primes so no shape is a special case.
_ROWS, _FEATURES, _HIDDEN, _CLASSES = 16, 13, 11, 3


def _data(rng, dtype, n=_ROWS, features=_FEATURES):
    return rng.standard_normal((n, features)).astype(dtype)


def _fit(model, x, y, loss, optimizer="sgd", metrics=("accuracy",)):
    """One ``fit`` epoch of two batches with validation, then ``evaluate`` and ``predict``:
    every kernel a training loop and its inference call."""
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    half = len(x) // 2
    model.fit(x, y, epochs=1, batch_size=half, validation_data=(x[:half], y[:half]),
              seed=0, verbose=0)
    model.evaluate(x, y)
    model.predict(x)


def _hidden_activations():
    """Every element-wise activation of the registry (softmax is an output layer)."""
    from .kernels.activations import ACTIVATIONS
    return [name for name in ACTIVATIONS if name != "softmax"]


def _dense(dtype, rng):
    """A Linear layer followed by each activation (fused in the product's epilogue where
    the activation allows it), softmax cross-entropy on integer labels, SGD with
    Nesterov momentum: what ``fastnn train`` compiles, and every activation."""
    import fastnn as fnn
    layers, width = [], _FEATURES
    for name in _hidden_activations():
        layers += [fnn.Linear(width, _HIDDEN), fnn.Activation(name)]
        width = _HIDDEN
    model = fnn.Sequential(*layers, fnn.Linear(width, _CLASSES), dtype=dtype, backend="numba",
                           seed=0)
    x, y = _data(rng, dtype), rng.integers(0, _CLASSES, _ROWS)
    _fit(model, x, y, "cross_entropy", fnn.SGD(lr=0.01, momentum=0.9, nesterov=True))
    model.predict_proba(x)


def _losses(dtype, rng):
    """Cross-entropy on one-hot targets and after a Softmax layer, BCE on logits and after
    a Sigmoid layer, MSE (on logits as the losses take them, and on probabilities)."""
    import fastnn as fnn
    x = _data(rng, dtype)
    labels = rng.integers(0, _CLASSES, _ROWS)
    one_hot = np.eye(_CLASSES, dtype=dtype)[labels]
    binary = rng.integers(0, 2, (_ROWS, 1)).astype(dtype)

    def model(*head):
        return fnn.Sequential(fnn.Linear(_FEATURES, _HIDDEN), fnn.ReLU(),
                              fnn.Linear(_HIDDEN, head[0]), *head[1:], dtype=dtype,
                              backend="numba", seed=0)

    _fit(model(_CLASSES), x, one_hot, "cross_entropy")
    _fit(model(_CLASSES, fnn.Softmax()), x, labels, "sparse_categorical_crossentropy")
    _fit(model(1), x, binary, "bce_with_logits")
    _fit(model(1, fnn.Sigmoid()), x, binary, "binary_crossentropy")
    _fit(model(1, fnn.Sigmoid()), x, binary, "bce")
    _fit(model(2), x, _data(rng, dtype, features=2), "mse", metrics=("mse", "mae"))


def _optimizers(dtype, rng):
    """SGD (plain, momentum), Adam, AdamW (AMSGrad too), RMSprop (plain, centred with
    momentum), with weight decay on the weights only, as ``fastnn train`` sets it."""
    import fastnn as fnn
    x, y = _data(rng, dtype), rng.integers(0, _CLASSES, _ROWS)
    optimizers = [lambda params: fnn.SGD(params, lr=0.01),
                  lambda params: fnn.SGD(params, lr=0.01, momentum=0.9),
                  lambda params: fnn.Adam(params),
                  lambda params: fnn.AdamW(params, amsgrad=True),
                  lambda params: fnn.RMSprop(params),
                  lambda params: fnn.RMSprop(params, momentum=0.9, centered=True)]
    for make in optimizers:
        model = fnn.Sequential(fnn.Linear(_FEATURES, _HIDDEN), fnn.ReLU(),
                               fnn.Linear(_HIDDEN, _CLASSES), dtype=dtype, backend="numba",
                               seed=0)
        _fit(model, x, y, "cross_entropy", make(fnn.weight_decay_groups(model)))


#: The activations that follow a normalisation layer in common models (there they run as
#: layers of their own, ~1.5 s of compilation each per dtype; the others compile on first
#: use).  GELU and Gaussian always run on their own and are compiled by :func:`_dense`.
NORM_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")


def _normalisation(dtype, rng):
    """BatchNorm1d and LayerNorm before the common activations (which then run as layers
    of their own, not fused), Dropout after them: ``fastnn train --batchnorm --dropout``."""
    import fastnn as fnn
    layers, width = [], _FEATURES
    for i, name in enumerate(NORM_ACTIVATIONS):
        norm = fnn.BatchNorm1d(_HIDDEN) if i % 2 == 0 else fnn.LayerNorm(_HIDDEN)
        layers += [fnn.Linear(width, _HIDDEN, bias=i % 2 == 1), norm, fnn.Activation(name),
                   fnn.Dropout(0.2)]
        width = _HIDDEN
    model = fnn.Sequential(*layers, fnn.Linear(width, _CLASSES), dtype=dtype, backend="numba",
                           seed=0)
    x, y = _data(rng, dtype), rng.integers(0, _CLASSES, _ROWS)
    _fit(model, x, y, "cross_entropy", "adam")


def _transformer(dtype, rng):
    """``fastnn train --model transformer`` (rows of pixels as tokens, learned positions,
    post-norm GELU encoder layers with dropout, mean pool) and a token model (Embedding,
    sinusoidal positions, a causal pre-norm ReLU layer, first token), both with Adam;
    the functional attention with a mask."""
    import fastnn as fnn
    seq, dim, heads = 7, 8, 2
    x = rng.standard_normal((_ROWS, seq, 5)).astype(dtype)
    y = rng.integers(0, _CLASSES, _ROWS)
    rows = fnn.Sequential(fnn.Linear(5, dim), fnn.PositionalEmbedding(seq, dim),
                          fnn.TransformerEncoderLayer(dim, heads, ff_dim=12, dropout=0.1,
                                                      activation="gelu"),
                          fnn.MeanPool(), fnn.Linear(dim, _CLASSES), dtype=dtype,
                          backend="numba", seed=0)
    _fit(rows, x, y, "cross_entropy", "adam")
    ids = rng.integers(0, 20, (_ROWS, seq))
    tokens = fnn.Sequential(fnn.Embedding(20, dim), fnn.SinusoidalPositionalEncoding(dim),
                            fnn.TransformerEncoderLayer(dim, heads, ff_dim=12, dropout=0.0,
                                                        norm_first=True, causal=True),
                            fnn.FirstToken(), fnn.Linear(dim, _CLASSES), dtype=dtype,
                            backend="numba", seed=0)
    _fit(tokens, ids, y, "cross_entropy", "adam")
    with fnn.use_backend("numba"):
        q = rng.standard_normal((2, heads, seq, dim // heads)).astype(dtype)
        mask = rng.random((seq, seq)) < 0.8
        out = fnn.scaled_dot_product_attention(q, q, q, mask=mask)
        fnn.scaled_dot_product_attention_backward(out, q, q, q, mask=mask)


#: The groups of each model family, in the order they run: (name, function(dtype, rng)).
GROUPS = {
    "mlp": [("dense layers, every activation, cross-entropy, SGD", _dense),
            ("losses: cross-entropy, BCE, MSE", _losses),
            ("optimizers: SGD, Adam, AdamW, RMSprop", _optimizers),
            ("BatchNorm1d, LayerNorm, Dropout", _normalisation)],
    "transformer": [("attention, transformer encoder, embeddings", _transformer)],
}
DTYPES = ("float32", "float64")


def warmup(dtypes=("float32",), models=("mlp",), verbose=True):
    """Compile (or load from Numba's cache) every kernel typical models need, for this CPU.

    Parameters
    ----------
    dtypes : sequence of {"float32", "float64"}
        Precisions to compile for (each is compiled separately).
    models : sequence of {"mlp", "transformer"} or "all"
        ``"mlp"``: dense layers with every activation, the cross-entropy, BCE and MSE
        losses, SGD/Adam/AdamW/RMSprop, BatchNorm1d/LayerNorm/Dropout (followed by the
        :data:`NORM_ACTIVATIONS`); ``"transformer"``: attention, encoder layers,
        embeddings and positions; ``"all"``: both.
    verbose : bool
        Print each group's seconds and the total.

    Returns
    -------
    dict
        ``{"seconds": total, "compiled": bool, "groups": [{"name", "dtype", "seconds",
        "compiled"}, ...]}``; ``compiled`` is False when every kernel came from the cache
        (the machine was already warm).
    """
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    if models == "all" or models == ("all",):
        models = tuple(GROUPS)
    elif isinstance(models, str):
        models = (models,)
    dtypes = [np.dtype(d).name for d in dtypes]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"warmup compiles float32 and float64 kernels, not {d}")
    for m in models:
        if m not in GROUPS:
            raise ValueError(f"unknown model family {m!r}; choose from {sorted(GROUPS)} "
                             "or 'all'")
    say = print if verbose else (lambda *a, **k: None)
    say(f"fastnn warmup for this CPU ({_cpu_name()}): {', '.join(models)}; "
        f"{', '.join(dtypes)}")
    report, start = [], time.perf_counter()
    for dtype in dtypes:
        for family in models:
            for name, run in GROUPS[family]:
                began = time.perf_counter()
                with CompileWatch() as watch:
                    run(dtype, np.random.default_rng(0))
                seconds = time.perf_counter() - began
                report.append({"name": name, "dtype": dtype, "seconds": seconds,
                               "compiled": watch.compiled})
                say(f"  {dtype} {name}: {seconds:.1f} s"
                    f"{'' if watch.compiled else ' (from the cache)'}", flush=True)
    total = time.perf_counter() - start
    compiled = any(group["compiled"] for group in report)
    if compiled:
        say(f"done in {total:.1f} s; cached in {_cache_location()}: later processes on this "
            "CPU load these kernels instead of compiling them")
    else:
        say(f"already warm: every kernel loaded from the cache in {total:.1f} s "
            f"({_cache_location()})")
    return {"seconds": total, "compiled": compiled, "groups": report}


def _cpu_name():
    from numba.core import config
    from llvmlite import binding as llvm
    return config.CPU_NAME or llvm.get_host_cpu_name()


def _cache_location():
    """The directory Numba caches fastnn's kernels in (one kernel's, as an example)."""
    from .kernels import matmul
    return matmul._gemm.stats.cache_path
