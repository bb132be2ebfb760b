"""fastnn beyond one process.

Today: batch inference on Dask arrays, :func:`predict_dask` (optional extra
``pip install "fastnn[dask]"``).  Data-parallel training over MPI will join this module.

Dask is imported inside :func:`predict_dask` only, so ``import fastnn`` never imports it.
"""
import hashlib
import os
import tempfile
import threading

import numpy as np

__all__ = ["predict_dask"]

_METHODS = ("predict", "predict_proba", "__call__")

# One model per worker process: key -> model.  A path is keyed by (path, mtime, size), so a
# rewritten file is read again; a model object by the SHA-256 of its saved bytes.
_MODEL_CACHE = {}
_CACHE_LOCK = threading.Lock()
_LOAD_COUNT = 0          # how many times this process read a model (the tests read it back)


def _load_cached(source):
    global _LOAD_COUNT
    kind, key, blob = source
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            from .serialization import load_model
            if kind == "path":
                model = load_model(key[1])
            else:
                # load_model reads a path: the bytes go through a private temporary file.
                fd, tmp = tempfile.mkstemp(suffix=".fnn")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(blob)
                    model = load_model(tmp)
                finally:
                    os.remove(tmp)
            _MODEL_CACHE[key] = model
            _LOAD_COUNT += 1
    return model


def _predict_block(block, source, method, batch_size, num_threads):
    from .threads import get_num_threads, set_num_threads
    model = _load_cached(source)
    previous = get_num_threads()
    if num_threads is not None:
        set_num_threads(num_threads)
    try:
        # A forward pass keeps state in the layers and one model serves all the threads of
        # a process, so its blocks run one at a time; each uses Numba's threads, which
        # therefore never multiply (2 cores, 100000x784 through 784-512-256-10 on the
        # threaded scheduler: 0.62 s as is, 0.90 s with num_threads=1).
        with _model_lock(source[1]):
            return _run(model, np.ascontiguousarray(block), method, batch_size)
    finally:
        if num_threads is not None:
            set_num_threads(previous)


_MODEL_LOCKS = {}


def _model_lock(key):
    with _CACHE_LOCK:
        return _MODEL_LOCKS.setdefault(key, threading.Lock())


def _run(model, x, method, batch_size):
    if method == "__call__":
        return model(x) if batch_size is None else np.concatenate(
            [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
            or [model(x[:0])])
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    return getattr(model, method)(x, **kwargs)


def predict_dask(model_or_path, x, method="predict", batch_size=None, num_threads=None):
    """Run a fastnn model over the rows of a Dask array, lazily.

    ``x`` is rechunked so that its features are one chunk (row chunks are kept); then
    :func:`dask.array.map_blocks` applies the model to each row block.  The model is read
    once per worker process, not per block: a path is loaded by each process the first time
    it runs a block (cached by path, mtime and size); a model object is saved to bytes once
    into the graph (one shared key, not one copy per block) and loaded once per process.
    Kernels compile once per worker through Numba's on-disk cache; run ``fastnn warmup`` on
    the workers' machine to avoid first-call compiles.

    Parameters
    ----------
    model_or_path : fastnn.Sequential or str or os.PathLike
        A model, or a file written by ``model.save``.
    x : dask.array.Array, shape (n, n_features)
    method : {"predict", "predict_proba", "__call__"}
        ``"predict"``: labels (int64, shape (n,)) for classification, raw outputs otherwise;
        ``"predict_proba"``: probabilities (n, k); ``"__call__"``: raw outputs (n, k).
    batch_size : int, optional
        Rows per forward pass inside a block (default: the model's own default).
    num_threads : int, optional
        fastnn (Numba) threads per block.  Default: unchanged.  Blocks sharing a process
        run one at a time (they share one model), so Numba's threads do not multiply with
        the scheduler's; with several single-threaded worker processes per machine,
        ``num_threads=1`` avoids oversubscription (processes x Numba threads > cores).

    Returns
    -------
    dask.array.Array
        Lazy; same row chunks as ``x``; dtype and shape as ``model.<method>`` gives.
    """
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError('fastnn.distributed.predict_dask needs Dask: '
                          'pip install "fastnn[dask]"') from exc
    from .serialization import load_model, save_model

    if method not in _METHODS:
        raise ValueError(f"predict_dask: method must be one of {_METHODS}, got {method!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"predict_dask: batch_size must be a positive integer, "
                         f"got {batch_size!r}")
    if num_threads is not None and (not isinstance(num_threads, (int, np.integer))
                                    or num_threads < 1):
        raise ValueError(f"predict_dask: num_threads must be a positive integer, "
                         f"got {num_threads!r}")
    if not isinstance(x, da.Array):
        raise TypeError(f"predict_dask: x must be a dask.array.Array, got {type(x).__name__}; "
                        f"wrap a NumPy array with dask.array.from_array(x, chunks=...)")
    if x.ndim != 2:
        raise ValueError(f"predict_dask: x must be 2-D (n_samples, n_features), got shape "
                         f"{x.shape}; reshape a single sample with x.reshape(1, -1)")

    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model_or_path))
        st = os.stat(path)
        model = load_model(path)       # on the client: checks the file, gives the meta
        source = ("path", ("path", path, st.st_mtime_ns, st.st_size), None)
    else:
        model = model_or_path
        if not hasattr(model, "state_dict"):
            raise TypeError(f"predict_dask: expected a fastnn model or a path, got "
                            f"{type(model).__name__}")
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = os.path.join(tmp, "model.fnn")
            save_model(model, tmp_path)
            with open(tmp_path, "rb") as f:
                blob = f.read()
        source = ("bytes", ("bytes", _content_digest(blob)), blob)

    n_in = _n_features(model)
    if n_in is not None and x.shape[1] != n_in:
        raise ValueError(f"predict_dask: the model expects {n_in} features, x has "
                         f"{x.shape[1]} (shape {x.shape})")
    if method == "predict_proba" and getattr(model, "loss", None) is None:
        raise ValueError("predict_dask: predict_proba needs a compiled model "
                         "(model.compile(loss=...))")

    # The meta: run the model on two rows on the client; this gives dtype and trailing shape.
    probe = _run(model, np.zeros((2, x.shape[1]), dtype=x.dtype), method, None)
    x = x.rechunk({1: -1})
    # One graph key holds the source (with a model object: its bytes), shared by every block.
    source_key = dask.delayed(source, pure=True, traverse=False)
    kwargs = dict(method=method, batch_size=batch_size, num_threads=num_threads,
                  dtype=probe.dtype, meta=np.empty((0,) * probe.ndim, dtype=probe.dtype))
    if probe.ndim == 1:
        return da.map_blocks(_predict_block, x, source_key, drop_axis=1, **kwargs)
    return da.map_blocks(_predict_block, x, source_key,
                         chunks=(x.chunks[0], (probe.shape[1],)), **kwargs)


def _content_digest(blob):
    """SHA-256 of a saved model's members (not of the zip, whose entries carry the time of
    saving): the same model saved twice gets the same key, so workers do not reload it."""
    import io
    import zipfile
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for name in sorted(zf.namelist()):
            digest.update(name.encode() + b"\0" + zf.read(name))
    return digest.hexdigest()


def _n_features(model):
    """Input width of the first layer that declares one, or None."""
    for layer in getattr(model, "layers", ()):
        for name in ("in_features", "n_in"):
            value = getattr(layer, name, None)
            if isinstance(value, int):
                return value
    return None
