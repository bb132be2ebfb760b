"""Matrix-multiply kernels for dense layers: forward ``X @ W`` (optionally fused with the
bias and activation), backward ``dY @ W.T`` and the weight gradient ``X.T @ dY``.

Public functions (thin Python wrappers around one compiled core, see "Compile time"). The
code is in these modules: this one (dispatch, threads, the public functions),
:mod:`.gemm_task` (one block of the output: the loops, packing, epilogue, and the cache
blocking :func:`.gemm_task.blocking`), :mod:`.gemm_tiles` (the micro-kernels and packing
routines), :mod:`.simd_tiles` / :mod:`.simd_vectors` (register tiles and vectors) and
:mod:`.target` (the instruction-set path and the tile shapes):

* ``matmul(a, b, out, accumulate=False)``      ``out (+)= a @ b``
* ``matmul_nt(a, b, out, accumulate=False)``   ``out (+)= a @ b.T``
* ``matmul_tn(a, b, out, accumulate=False)``   ``out (+)= a.T @ b``
* ``matmul_bias_act(a, b, bias, out, act, p0, p1)``  ``out = f(a @ b + bias)``

Design (GotoBLAS/BLIS blocking around explicit-SIMD micro-kernels):

* The core sees each operand as a flat array plus *element strides*: ``A[i, k] =
  a[i*a_rs + k*a_cs]``, ``B[k, j] = b[k*b_rs + j*b_cs]``.  A transposed layout is just
  another pair of strides, so one compiled core per dtype serves every layout.
* The instruction set the kernels are compiled for (:data:`.target.TARGET`: AVX-512,
  AVX2 + FMA, or a portable 16-byte path; set by ``NUMBA_CPU_NAME`` /
  ``NUMBA_CPU_FEATURES`` or the host) fixes the vector width and the register tiles
  (:data:`.target.TILES`); the caches of the machine fix the blocking, which is passed at
  run time.
* Micro-kernel (:func:`.gemm_tiles.tile_bcast`): an ``MR x NR`` block of ``out`` lives in
  registers while ``k`` runs (AVX-512: 12 x 32 float32 in 24 zmm; AVX2: 6 x 16 in 12
  ymm); per ``k`` it loads two vectors of a ``B`` row, broadcasts ``MR`` values of ``A``
  and issues ``2 * MR`` multiply-adds.  The block is one :class:`.simd_tiles.Tile` value
  (LLVM does not keep the accumulators of a plain-loop tile in registers); a test checks
  every path's inner loops for spills.
* Blocking: per column block of ``nb`` columns and ``k`` block of ``kc``, the ``B`` block
  (``kc x nb``, half of L2) is packed into ``NR``-column panels (zero-padded) when many
  rows reuse it or when it is transposed (``matmul_nt``); with few rows a row-major ``B``
  is read in place (packing would cost as much as the product) and only a ragged last
  panel is packed.  ``mc`` rows of ``A`` at a time are packed into ``MR``-row
  micro-panels; each panel of ``B`` then meets every micro-panel of the ``mc`` rows
  while it is in L1.  Packing transposes blocks of 8 in registers
  (:func:`.simd_vectors.transpose_block`).  Ragged tiles of ``out`` go through a scratch
  tile, so this micro-kernel never needs masks.
* Small and narrow products have their own tiles (same :func:`.gemm_tiles.tile_in_place`
  loop, shapes from :data:`.target.TILES`), which read ``A`` in place: ``narrow``
  (N < 16, e.g. a 10-class output) and ``rows`` (batches of 1..7 rows, ``B`` in place
  too); and :func:`.gemm_tiles.tile_dot` (dot products along ``k``: ``matmul_nt`` with
  few rows, where a transposing pack of the weights would cost more than the product).
  ``matmul_tn`` with a narrow output and a long contraction computes ``out.T`` into a
  scratch instead. :func:`_gemm` documents the dispatch rules and their thresholds.
* Epilogue: ``act >= 0`` applies :func:`.epilogue.bias_act_run` to ``out`` right after
  its last ``k`` block is stored, while it is in cache: with the micro-kernel to each
  finished ``mc x nb`` block (one call per row of ``nb`` columns: one call per row of each
  tile cost more than the arithmetic), with the other tiles to each tile; ``act = -1`` is
  the plain product.
* Threads: the output is split into one task per thread (rows or columns, whole tiles)
  run on ``numba.prange``; problems under ``SERIAL_FLOPS`` run on the calling thread.
  Every element of ``out`` is summed in the same order whatever the split (``k`` in
  order, the same ``KC`` blocks, the tile chosen by the shape alone), so results do not
  depend on the thread count.

Compile time (user-visible: the first call in a fresh process compiles everything):

* One compilation per dtype serves all public functions: they are plain Python wrappers
  that normalise their arguments (layout code, ``accumulate`` as a bool, the epilogue
  code and parameters, the thread count) before calling the one jitted driver
  :func:`_gemm`, so no layout, default argument or epilogue is a specialisation of its
  own.  (``numba.get_num_threads()`` is read in Python: called from jitted code it makes
  the function uncachable.)
* Numba re-optimises a callee's whole code in every jitted function that calls it, and a
  ``prange`` adds two such levels (the outlined loop body and its parent).  The task code
  (:func:`.gemm_task._task`: packing, all tiles, the epilogue, ~3/4 of the code) is
  therefore compiled once per dtype as a C callback (``numba.cfunc``, cached like the
  kernels) and :func:`_gemm` calls it through its address
  (:func:`.gemm_task._task_function`, an indirect call),
  so that code is optimised once instead of three times: 5-6 s instead of 9 s cold.

Every index is an unsigned 64-bit integer.  With signed indices Numba emits
negative-index wrap-around code that stops LLVM from vectorising contiguous loads.
"""
import numba
import numpy as np

from ._jit import kernel, parallel_kernel
from .epilogue import NO_EPILOGUE
from .gemm_task import (_BCAST, _DOT, _EPILOGUE_ONLY, _NARROW, _PACKED, _ROWS, _compile_task,
                        _task_function, blocking)
from .gemm_tiles import (DOT_COLS, DOT_ROW_COLS, DOT_ROWS, MR, NARROW_ROWS, NARROW_VECTORS,
                         NRV, ROW_VECTORS, ROWS_ROWS, ROWS_VECTORS)
from .simd_vectors import lanes as _lanes
from .target import NARROW_COLUMNS, TARGET

__all__ = ["matmul", "matmul_nt", "matmul_tn", "matmul_bias_act"]

_U = np.uint64

# Internal kernels are only called from other kernels: no CPython wrapper (saves compile
# time; they cannot be called from Python).
_internal = kernel(no_cpython_wrapper=True)


# --------------------------------------------------------------------------- parameters
PACK_MIN_ROWS = _U(96)   # fewer rows: a row-major B is read in place, not packed
DOT_MAX_ROWS = _U(24)    # matmul_nt with fewer rows: dot-product tiles, no packing ...
DOT_MIN_K = _U(32)       # ... unless the dot products are too short to vectorise
ROWS_MAX = _U(7)         # at most this many rows: 4-row tiles (B streamed once per 4 rows)
NARROW_N = _U(NARROW_COLUMNS)  # fewer output columns: narrow tiles ...
TRANSPOSED_MIN_K = _U(32)  # ... but matmul_tn with K >= this computes out.T instead
SERIAL_FLOPS = _U(1 << 20)  # fewer flops: one thread beats waking the pool ...
# ... unless an operand spans the L2 (blocking[4], TARGET.l2_bytes): a product with a few
# rows is then bound by one core's L3 bandwidth
MIN_SPLIT_ROWS = _U(128)    # threads split the rows if each gets this many, else ... (with
                            # fewer, each thread would pack all of B: splitting the
                            # columns of a 128-row product was 10-20% faster)
MIN_SPLIT_COLS = _U(128)    # ... the columns, if each gets this many


# --------------------------------------------------------------------------- the core
_NN = 0
_NT = 1
_TN = 2


@_internal
def _cdiv(n, d):
    """Ceiling of ``n / d`` for unsigned integers."""
    return (n + d - _U(1)) // d


@parallel_kernel
def _gemm(a, b, out, layout, accumulate, act, bias, p0, p1, n_threads, task_address, blocking):
    """``out (+)= op(a) @ op(b)``, then ``out = f(out + bias)`` if ``act >= 0``.

    ``layout``: ``_NN`` (``a @ b``), ``_NT`` (``a @ b.T``), ``_TN`` (``a.T @ b``).
    ``accumulate`` is a bool and the epilogue is only used with ``accumulate=False``.
    ``blocking``: ``(kc, nb, mc, dot_kc, parallel_bytes)`` (:func:`_per_dtype`).

    Dispatch (``M x N`` output, contraction ``K``; thresholds are the constants above;
    the first rule that applies wins):

    1. ``_TN``, ``N < NARROW_N``, ``K >= TRANSPOSED_MIN_K``: transposed output (the
       weight gradient of a 10-class layer).  ``out.T = b.T @ a`` has ``N`` short rows and
       ``M`` wide columns: the ``rows`` tiles compute it into a scratch, ``a`` read in
       place with vectors along M, and it is transposed into ``out``.
    2. ``N < NARROW_N``: the ``narrow`` tiles, ``a`` read in place and ``b`` through a
       zero-padded copy of its few columns; ``_NT`` first copies its tiny ``b`` (N x K)
       transposed.
    3. ``_NT``, ``M < DOT_MAX_ROWS``, ``K >= DOT_MIN_K``: dot-product tiles on the
       caller's arrays (a transposing pack of ``b`` would cost more than the product).
    4. ``M <= ROWS_MAX`` and ``b`` row-major: the ``rows`` tiles (one row: the ``row``
       tile), both in place; the product streams ``b`` once per tile of rows.
    5. ``b`` row-major and ``M < PACK_MIN_ROWS``: the ``MR x NR`` micro-kernel, ``b`` in
       place.
    6. Otherwise the ``MR x NR`` micro-kernel with ``b`` packed.

    Threads: under ``SERIAL_FLOPS`` (or one thread) a single task on this thread, unless
    an operand spans ``parallel_bytes`` (the L2 size): a product of a few rows with a weight larger than
    L2 streams it from L3 at one core's bandwidth (the B = 1 forward of a 784 x 512 layer:
    23 us on one thread, 13 us on two; NumPy 19 us);
    otherwise one task per thread, splitting the rows if each thread gets at least
    ``MIN_SPLIT_ROWS`` of them (each thread then packs the same ``B``, which pays off with
    many rows), else the columns if each thread gets at least
    ``MIN_SPLIT_COLS``, else the rows (whole tiles either way).
    """
    if layout == _NT:
        M = _U(a.shape[0])
        K = _U(a.shape[1])
        N = _U(b.shape[0])
        a_rs, a_cs, b_rs, b_cs = K, _U(1), _U(1), K
    elif layout == _TN:
        K = _U(a.shape[0])
        M = _U(a.shape[1])
        N = _U(b.shape[1])
        a_rs, a_cs, b_rs, b_cs = _U(1), M, N, _U(1)
    else:
        M = _U(a.shape[0])
        K = _U(a.shape[1])
        N = _U(b.shape[1])
        a_rs, a_cs, b_rs, b_cs = K, _U(1), N, _U(1)
    c = out.reshape(out.size)
    af = a.reshape(a.size)
    bf = b.reshape(b.size)
    if M == _U(0) or N == _U(0):
        return out
    task = _task_function(_U(task_address), c)
    kcb = _U(blocking[0])
    nbb = _U(blocking[1])
    mcb = _U(blocking[2])
    dot_kcb = _U(blocking[3])
    parallel_bytes = _U(blocking[4])
    if K == _U(0):
        if not accumulate:
            for i in range(M * N):      # a loop, not c[:] = 0: that would be a parfor
                c[i] = out.dtype.type(0)
        if act >= 0:
            task(_U(0), _U(1), M, N, np.int64(_EPILOGUE_ONLY), M, N, K, af, K, _U(1), bf, N,
                 _U(1), c, N, accumulate, np.int64(act), bias, np.float64(p0),
                 np.float64(p1), kcb, nbb, mcb, dot_kcb)
        return out

    transposed = layout == _TN and N < NARROW_N and K >= TRANSPOSED_MIN_K and act < 0
    ldc = N
    cc = c
    if transposed:
        # Rule 1: swap the operands; the result goes to a scratch with rows of length M.
        M, N = N, M
        af, bf = bf, af
        a_rs, a_cs, b_rs, b_cs = _U(1), M, N, _U(1)
        ldc = N
        cc = np.empty(M * N, dtype=out.dtype)
    if transposed:
        mode = _ROWS                                  # rule 1
    elif N < NARROW_N:
        mode = _NARROW                                # rule 2
        if b_cs != _U(1):
            bt = np.empty(N * K, dtype=out.dtype)
            for j in range(N):
                for k in range(K):
                    bt[k * N + j] = bf[j * b_cs + k]
            bf = bt
            b_rs, b_cs = N, _U(1)
    elif layout == _NT and M < DOT_MAX_ROWS and K >= DOT_MIN_K:
        mode = _DOT                                   # rule 3
    elif M <= ROWS_MAX and b_cs == _U(1):
        mode = _ROWS                                  # rule 4
    elif b_cs == _U(1) and M < PACK_MIN_ROWS:
        mode = _BCAST                                 # rule 5
    else:
        mode = _PACKED                                # rule 6
    acc = accumulate and not transposed

    # The task grid (see the docstring).
    if mode == _DOT:
        unit_m = _U(DOT_ROWS)
        unit_n = _U(DOT_COLS) if M > _U(1) else _U(DOT_ROW_COLS)
    elif mode == _NARROW:
        unit_m = _U(NARROW_ROWS)
        unit_n = _U(NARROW_VECTORS) * _lanes(c)
    elif mode == _ROWS:
        unit_m = _U(ROWS_ROWS)
        unit_n = (_U(ROWS_VECTORS) if M > _U(1) else _U(ROW_VECTORS)) * _lanes(c)
    else:
        unit_m = _U(MR)
        unit_n = _U(NRV) * _lanes(c)
    threads = _U(max(n_threads, 1))
    grid_m = _U(1)
    grid_n = _U(1)
    bm = M
    bn = N
    big = K * max(M, N) * _U(out.itemsize) >= parallel_bytes
    if threads > _U(1) and (_U(2) * M * N * K >= SERIAL_FLOPS or big):
        if M < threads * MIN_SPLIT_ROWS and N >= threads * MIN_SPLIT_COLS:
            bn = _cdiv(_cdiv(N, threads), unit_n) * unit_n
            grid_n = _cdiv(N, bn)
        else:
            bm = _cdiv(_cdiv(M, threads), unit_m) * unit_m
            grid_m = _cdiv(M, bm)
    n_tasks = grid_m * grid_n
    mode = np.int64(mode)
    act = np.int64(act)
    p0 = np.float64(p0)
    p1 = np.float64(p1)
    if n_tasks == _U(1):
        task(_U(0), grid_n, bm, bn, mode, M, N, K, af, a_rs, a_cs, bf, b_rs, b_cs, cc, ldc,
             acc, act, bias, p0, p1, kcb, nbb, mcb, dot_kcb)
    else:
        for t in numba.prange(n_tasks):
            task(_U(t), grid_n, bm, bn, mode, M, N, K, af, a_rs, a_cs, bf, b_rs, b_cs, cc,
                 ldc, acc, act, bias, p0, p1, kcb, nbb, mcb, dot_kcb)

    if transposed:
        # cc holds out.T (M x N here is the swapped problem: M = out's columns).
        for i in range(N):
            for j in range(M):
                if accumulate:
                    c[i * M + j] += cc[j * N + i]
                else:
                    c[i * M + j] = cc[j * N + i]
    return out


# --------------------------------------------------------------------------- public API
_PER_DTYPE = {}     # dtype -> (empty bias, address of the compiled task, blocking)


def _per_dtype(dtype):
    """``(empty bias array, task address, blocking)`` for ``dtype``, compiling the task if
    needed.  ``blocking`` is :func:`.gemm_task.blocking` plus the operand size from which
    a product with few rows runs on every thread (the L2 size)."""
    entry = _PER_DTYPE.get(dtype)
    if entry is None:
        # Python ints: a tuple of NumPy scalars costs 0.3 us more per call to unbox.
        sizes = tuple(int(x) for x in blocking(np.dtype(dtype).itemsize))
        entry = _PER_DTYPE[dtype] = (np.empty(0, dtype), _compile_task(dtype).address,
                                     sizes + (int(TARGET.l2_bytes),))
    return entry


def _threads():
    """Numba's thread count (for the task grid).  ``numba.get_num_threads()`` costs
    0.5 us a call (it checks that the pool is started); after the first call this reads
    the same thread-local setting through the threading layer's C function (0.1 us)."""
    global _threads
    count = numba.get_num_threads()
    try:
        from numba.np.ufunc import parallel
        fast = parallel._get_num_threads
        if fast() == count:
            _threads = fast
    except (ImportError, AttributeError):
        _threads = numba.get_num_threads
    return count


def matmul(a, b, out, accumulate=False):
    """Matrix product ``out = a @ b`` (or ``out += a @ b``): the dense forward ``X @ W``.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add the product to the existing contents of ``out``
        (gradient accumulation); otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task, sizes = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _NN, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task, sizes)


def matmul_nt(a, b, out, accumulate=False):
    """Product with the right operand transposed, ``out (+)= a @ b.T``: the dense
    backward ``dX = dY @ W.T``.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (N, K), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add to the existing contents of ``out``; otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task, sizes = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _NT, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task, sizes)


def matmul_tn(a, b, out, accumulate=False):
    """Product with the left operand transposed, ``out (+)= a.T @ b``: the dense
    weight gradient ``dW = X.T @ dY``.

    Parameters
    ----------
    a : ndarray, shape (K, M), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping ``a``/``b``
    accumulate : bool, default False
        If True, add to the existing contents of ``out`` (accumulating gradients over
        micro-batches); otherwise overwrite them.

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    no_bias, task, sizes = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _TN, bool(accumulate), NO_EPILOGUE, no_bias, 0.0, 0.0, _threads(),
                 task, sizes)


def matmul_bias_act(a, b, bias, out, act, p0=0.0, p1=0.0):
    """Dense-layer forward in one pass: ``out = f(a @ b + bias)``.

    The bias and activation are applied to each strip of tiles of the product right
    after its last ``k`` block is stored, while it is in cache, so ``out`` is written once.

    Parameters
    ----------
    a : ndarray, shape (M, K), C-contiguous, float32 or float64
    b : ndarray, shape (K, N), C-contiguous, same dtype
    bias : ndarray, shape (N,), same dtype; a size-0 array for no bias
    out : ndarray, shape (M, N), C-contiguous, same dtype, not overlapping the inputs
    act : int
        Activation code from :data:`fastnn.kernels.epilogue.EPILOGUE_CODES`
        (``-1``: none, same as ``identity``).
    p0, p1 : float
        The activation's parameters in the order of
        :data:`fastnn.kernels.activations.ACTIVATIONS` (sigmoid ``beta``;
        leaky_relu/elu ``alpha``; piecewise_linear ``x_min, x_max``).

    Returns
    -------
    out : ndarray, shape (M, N)
        The same object that was passed in.
    """
    _, task, sizes = _PER_DTYPE.get(out.dtype) or _per_dtype(out.dtype)
    return _gemm(a, b, out, _NN, False, max(int(act), 0), bias, float(p0), float(p1),
                 _threads(), task, sizes)
