"""Matrix-multiply kernels for dense layers: forward ``X @ W``, backward ``dY @ W.T``
and the weight gradient ``X.T @ dY``.

All three public functions share one blocked core that sees its operands as flat
arrays plus *element strides*: element ``(i, k)`` of the left operand is
``a[i*a_row + k*a_col]`` and element ``(k, j)`` of the right operand is
``b[k*b_row + j*b_col]``.  A transposed layout is just another pair of strides, so
one compiled core per dtype serves all three layouts.  Compile time is
user-visible: the core takes ~7 s per dtype the first time on this machine and
each public function ~0.7 s more; ``cache=True`` makes that a once-per-machine cost.

The core (GotoBLAS-style blocking, written as plain loops that LLVM vectorises):

* The output is cut into tasks of ``mc`` rows by ``nj`` columns (a *chunk*), run
  on ``numba.prange``.  A task walks its rows four at a time; for each group of
  four ``k`` it holds the 4x4 left-operand scalars in registers and sweeps the
  chunk with a contiguous inner loop: per 16-wide output vector, 4 loads of the
  right operand and 16 ``vfmadd...ps zmm``.  The four rows accumulate in a small
  private tile, written to ``out`` once per ``k`` block (see ``_compute_task``).
* ``k`` is cut into blocks of ``KC`` so that the right operand's block for a chunk
  stays in L2 while all the task's rows use it.  With many rows
  (``M >= PACK_MIN_ROWS``) that block is first packed into contiguous scratch,
  chunk by chunk, so it streams without cache-set conflicts whatever the caller's
  row length, and the transposed operand of ``matmul_nt`` becomes row-major too.
  With fewer rows a row-major right operand is read in place: packing cost as
  much as it saved, and the threads then read a block packed by the other core.
* ``matmul_nt`` with fewer than ``DOT_MAX_ROWS`` rows (both operands contiguous
  along ``k``) runs as 4x4 blocks of dot products instead, without packing.
* Problems under ``SERIAL_FLOPS`` run the same tasks serially: waking Numba's
  thread pool costs a few µs.

Every index is an unsigned 64-bit integer.  With signed indices Numba emits
negative-index wrap-around code that stops LLVM from vectorising the contiguous
loads; a probe of this kernel with signed indices ran at scalar speed.
"""
import numba
import numpy as np

from ._jit import kernel, parallel_kernel

__all__ = ["matmul", "matmul_nt", "matmul_tn"]

_U = np.uint64

# 'contract' lets LLVM fuse a * b + c into one FMA instruction.  It changes only
# rounding (one rounding instead of two, i.e. more accurate), never NaN/Inf
# propagation; without it LLVM emits a separate multiply and add, at half speed.
# 'nnan'/'ninf' are never used: NaN and Inf must propagate (tests check it).
_FMA = {"contract"}
# The dot-product tile also needs 'reassoc': a sum over k can only be vectorised by
# splitting it into partial sums, i.e. reordering the additions.  Again rounding
# only: NaN and Inf still propagate.
_FMA_REASSOC = {"contract", "reassoc"}

# Where the compute tasks read the right operand (see _compute_task).
_PACKED = 0
_IN_PLACE = 1
_DOT = 2

# Blocking parameters.  A k block of KC rows by NJ columns of the right operand
# (256 x 512 float32 = 512 KiB) stays in this machine's 1 MiB L2 and the four output
# rows being updated (4 x NJ) in L1.  KC is a count, not a size: float64 ran as well
# or better with 256 rows as with 128.  The dot-product tile keeps its 4 + 4 rows
# of DOT_KC_BYTES in L1.  NC bounds the packing scratch.
KC = _U(256)
DOT_KC_BYTES = _U(2048)
NJ = _U(512)
NC = _U(4096)
MC = _U(64)            # most output rows per task (task granularity, not a cache size)
MIN_NJ = _U(64)        # narrowest column chunk when columns are split among threads
MIN_SPLIT_NJ = _U(128)  # narrowest chunk when dot-product threads own the columns
PACK_MIN_ROWS = _U(128)  # fewer rows: read a row-major right operand in place
KBLOCK_MIN_ROWS = _U(16)  # fewer rows: no k blocks (each B element is used < 4x)
DOT_MAX_ROWS = _U(512)  # fewer rows: matmul_nt by dot products, no packing ...
DOT_MIN_K = _U(64)      # ... unless the sums are too short to vectorise
PACK_ROWS = _U(32)     # rows of the right operand per packing task
SERIAL_FLOPS = _U(1 << 19)  # fewer flops than this: one thread beats waking the pool
# Tasks to aim for per (column block, k block) in the parallel driver.  A constant
# rather than numba.get_num_threads(): calling that from jitted code makes the
# function uncachable ("dynamic globals"), and a fixed grid also makes the result
# bit-identical whatever the thread count.  8 balances 2..8 threads under static
# scheduling; large problems have many more tasks anyway (M / MC row blocks).
MIN_TASKS = _U(8)


@kernel
def _cdiv(n, d):
    """Ceiling of ``n / d`` for unsigned integers."""
    return (n + d - _U(1)) // d


@kernel(fastmath=_FMA)
def _rows4(kc, a, a0, a_row, a_col, b, b0, b_row, nj, c, c0, ldc):
    """Four output rows: ``c[c0 + r*ldc + j] += sum_k A[r, k] * B[k, j]``.

    ``A[r, k] = a[a0 + r*a_row + k*a_col]``, ``B[k, j] = b[b0 + k*b_row + j]``,
    for ``r < 4``, ``k < kc``, ``j < nj``.
    """
    a1 = a0 + a_row
    a2 = a1 + a_row
    a3 = a2 + a_row
    c1 = c0 + ldc
    c2 = c1 + ldc
    c3 = c2 + ldc
    one = _U(1)
    two = _U(2)
    three = _U(3)
    kq = kc // _U(4)
    for q in range(kq):
        k = q * _U(4)
        k0 = k * a_col
        k1 = (k + one) * a_col
        k2 = (k + two) * a_col
        k3 = (k + three) * a_col
        x00 = a[a0 + k0]
        x01 = a[a0 + k1]
        x02 = a[a0 + k2]
        x03 = a[a0 + k3]
        x10 = a[a1 + k0]
        x11 = a[a1 + k1]
        x12 = a[a1 + k2]
        x13 = a[a1 + k3]
        x20 = a[a2 + k0]
        x21 = a[a2 + k1]
        x22 = a[a2 + k2]
        x23 = a[a2 + k3]
        x30 = a[a3 + k0]
        x31 = a[a3 + k1]
        x32 = a[a3 + k2]
        x33 = a[a3 + k3]
        r0 = b0 + k * b_row
        r1 = r0 + b_row
        r2 = r1 + b_row
        r3 = r2 + b_row
        for j in range(nj):
            y0 = b[r0 + j]
            y1 = b[r1 + j]
            y2 = b[r2 + j]
            y3 = b[r3 + j]
            t = c[c0 + j]
            t += x00 * y0
            t += x01 * y1
            t += x02 * y2
            t += x03 * y3
            c[c0 + j] = t
            t = c[c1 + j]
            t += x10 * y0
            t += x11 * y1
            t += x12 * y2
            t += x13 * y3
            c[c1 + j] = t
            t = c[c2 + j]
            t += x20 * y0
            t += x21 * y1
            t += x22 * y2
            t += x23 * y3
            c[c2 + j] = t
            t = c[c3 + j]
            t += x30 * y0
            t += x31 * y1
            t += x32 * y2
            t += x33 * y3
            c[c3 + j] = t
    for k in range(kq * _U(4), kc):      # the last kc % 4 values of k
        kk = k * a_col
        x0 = a[a0 + kk]
        x1 = a[a1 + kk]
        x2 = a[a2 + kk]
        x3 = a[a3 + kk]
        r0 = b0 + k * b_row
        for j in range(nj):
            y = b[r0 + j]
            c[c0 + j] += x0 * y
            c[c1 + j] += x1 * y
            c[c2 + j] += x2 * y
            c[c3 + j] += x3 * y


@kernel(fastmath=_FMA)
def _rows1(kc, a, a0, a_col, b, b0, b_row, nj, c, c0):
    """One output row: ``c[c0 + j] += sum_k a[a0 + k*a_col] * b[b0 + k*b_row + j]``."""
    one = _U(1)
    two = _U(2)
    three = _U(3)
    kq = kc // _U(4)
    for q in range(kq):
        k = q * _U(4)
        x0 = a[a0 + k * a_col]
        x1 = a[a0 + (k + one) * a_col]
        x2 = a[a0 + (k + two) * a_col]
        x3 = a[a0 + (k + three) * a_col]
        r0 = b0 + k * b_row
        r1 = r0 + b_row
        r2 = r1 + b_row
        r3 = r2 + b_row
        for j in range(nj):
            t = c[c0 + j]
            t += x0 * b[r0 + j]
            t += x1 * b[r1 + j]
            t += x2 * b[r2 + j]
            t += x3 * b[r3 + j]
            c[c0 + j] = t
    for k in range(kq * _U(4), kc):
        x0 = a[a0 + k * a_col]
        r0 = b0 + k * b_row
        for j in range(nj):
            c[c0 + j] += x0 * b[r0 + j]


@kernel
def _pack_task(t, b, b_row, b_col, pc, kc, jc, nc, nj, bp):
    """Pack rows ``[k_lo, k_hi)`` of one column chunk of ``B[pc:pc+kc, jc:jc+nc]``.

    Chunk ``q`` (columns ``jc + q*nj`` onward, width ``w <= nj``) goes to
    ``bp[q*kc*nj + k*w + j]``: its rows are contiguous, ``w`` apart.
    Task ``t`` enumerates (chunk, block of ``PACK_ROWS`` rows), chunk-major.
    """
    nkb = _cdiv(kc, PACK_ROWS)
    q = t // nkb
    k_lo = (t % nkb) * PACK_ROWS
    k_hi = min(kc, k_lo + PACK_ROWS)
    j0 = q * nj
    w = min(nj, nc - j0)
    dst = q * kc * nj
    if b_col == _U(1):
        for k in range(k_lo, k_hi):
            src = (pc + k) * b_row + jc + j0
            row = dst + k * w
            for j in range(w):
                bp[row + j] = b[src + j]
    else:
        # Transposed source (matmul_nt with many rows): 16 source rows at a time, so
        # that each store fills whole cache lines of the destination row.
        sixteen = _U(16)
        for jb in range(_U(0), w, sixteen):
            jn = min(sixteen, w - jb)
            src = (jc + j0 + jb) * b_col + pc
            for k in range(k_lo, k_hi):
                row = dst + k * w + jb
                for jj in range(jn):
                    bp[row + jj] = b[src + jj * b_col + k * b_row]


@kernel(fastmath=_FMA_REASSOC)
def _dot_tile(kc, a, a0, lda, mr, b, b0, ldb, nr, c, c0, ldc, overwrite):
    """4x4 dot products, ``c[c0 + r*ldc + s] (+)= sum_k A[r, k] * B[s, k]``.

    ``A[r, k] = a[a0 + r*lda + k]``, ``B[s, k] = b[b0 + s*ldb + k]``, for
    ``r < mr <= 4``, ``s < nr <= 4``, ``k < kc``; ``=`` if ``overwrite``.

    Rows past ``mr`` / ``nr`` repeat the last valid row (so nothing is read out of
    bounds and the loop stays branch-free) and are not written back.
    """
    one = _U(1)
    a1 = a0 + min(one, mr - one) * lda
    a2 = a0 + min(_U(2), mr - one) * lda
    a3 = a0 + min(_U(3), mr - one) * lda
    b1 = b0 + min(one, nr - one) * ldb
    b2 = b0 + min(_U(2), nr - one) * ldb
    b3 = b0 + min(_U(3), nr - one) * ldb
    z = c.dtype.type(0)
    s00 = z; s01 = z; s02 = z; s03 = z  # noqa: E702
    s10 = z; s11 = z; s12 = z; s13 = z  # noqa: E702
    s20 = z; s21 = z; s22 = z; s23 = z  # noqa: E702
    s30 = z; s31 = z; s32 = z; s33 = z  # noqa: E702
    for k in range(kc):
        x0 = a[a0 + k]
        x1 = a[a1 + k]
        x2 = a[a2 + k]
        x3 = a[a3 + k]
        y0 = b[b0 + k]
        y1 = b[b1 + k]
        y2 = b[b2 + k]
        y3 = b[b3 + k]
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3  # noqa: E702
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3  # noqa: E702
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3  # noqa: E702
        s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3  # noqa: E702
    _store_row4(c, c0, nr, overwrite, s00, s01, s02, s03)
    if mr > one:
        _store_row4(c, c0 + ldc, nr, overwrite, s10, s11, s12, s13)
    if mr > _U(2):
        _store_row4(c, c0 + _U(2) * ldc, nr, overwrite, s20, s21, s22, s23)
    if mr > _U(3):
        _store_row4(c, c0 + _U(3) * ldc, nr, overwrite, s30, s31, s32, s33)


@kernel
def _store_row4(c, c0, nr, overwrite, s0, s1, s2, s3):
    """``c[c0 + s] (+)= (s0, s1, s2, s3)[s]`` for ``s < nr``; ``=`` if ``overwrite``."""
    if overwrite:
        c[c0] = s0
        if nr > _U(1):
            c[c0 + _U(1)] = s1
        if nr > _U(2):
            c[c0 + _U(2)] = s2
        if nr > _U(3):
            c[c0 + _U(3)] = s3
    else:
        c[c0] += s0
        if nr > _U(1):
            c[c0 + _U(1)] += s1
        if nr > _U(2):
            c[c0 + _U(2)] += s2
        if nr > _U(3):
            c[c0 + _U(3)] += s3


@kernel
def _compute_task(t, nq, nib, by_columns, mc, nj, M, N, a, a_row, a_col, pc, kc, jc, nc,
                  b, b_row, b_col, mode, c, overwrite):
    """Add ``A[rows, pc:pc+kc] @ B[pc:pc+kc, cols]`` to one task's block of ``c``.

    The ``nq * nib`` tasks are the column chunks (``nj`` columns from
    ``jc + q*nj``) times the row blocks (``mc`` rows), numbered chunk-major if
    ``by_columns`` else row-block-major; static scheduling then gives each thread
    whole chunks, respectively whole rows.  ``mode`` says where ``B`` is read:
    ``_PACKED``, chunk ``q`` of the packing scratch ``b``; ``_IN_PLACE``, the caller's
    row-major ``b``; ``_DOT``, the caller's ``b`` whose ``k`` stride is 1 (as is
    ``A``'s), by 4x4 blocks of dot products.  ``overwrite`` stores instead of adding
    (first ``k`` block of a call without ``accumulate``).
    """
    if by_columns:
        q = t // nib
        i_lo = (t % nib) * mc
    else:
        q = t % nq
        i_lo = (t // nq) * mc
    i_hi = min(M, i_lo + mc)
    j0 = q * nj
    w = min(nj, nc - j0)
    col = jc + j0
    four = _U(4)
    if mode == _DOT:
        i = i_lo
        while i < i_hi:
            mr = min(four, i_hi - i)
            for j in range(_U(0), w, four):
                _dot_tile(kc, a, i * a_row + pc, a_row, mr, b, (col + j) * b_col + pc, b_col,
                          min(four, w - j), c, i * N + col + j, N, overwrite)
            i += four
        return
    if mode == _PACKED:
        bq = q * kc * nj
        bs = w
    else:
        bq = pc * b_row + col
        bs = b_row
    # Four rows are accumulated in a private tile and written to c once per k block.
    # Updating c in place instead (once per group of four k) made two threads that
    # write neighbouring parts of one cache line of c bounce it between their cores
    # hundreds of times per call: 2 threads ran slower than 1.  The tile's rows are
    # one cache line longer than w, so they are never a multiple of 4 KiB apart.
    ldt = w + _U(64) // _U(c.itemsize)
    tile = np.empty(four * ldt, dtype=c.dtype)
    zero = c.dtype.type(0)
    i = i_lo
    while i < i_hi:
        mr = min(four, i_hi - i)
        for r in range(mr * ldt):
            tile[r] = zero
        if mr == four:
            _rows4(kc, a, i * a_row + pc * a_col, a_row, a_col, b, bq, bs, w, tile, _U(0), ldt)
        else:
            for r in range(mr):
                _rows1(kc, a, (i + r) * a_row + pc * a_col, a_col, b, bq, bs, w, tile, r * ldt)
        for r in range(mr):
            row = (i + r) * N + col
            tr = r * ldt
            if overwrite:
                for j in range(w):
                    c[row + j] = tile[tr + j]
            else:
                for j in range(w):
                    c[row + j] += tile[tr + j]
        i += four


@kernel
def _plan(M, nc, min_tasks, by_columns):
    """Task grid for one column block of width ``nc``: ``(nj, nq, mc, nib)``.

    Columns are cut into ``nq`` chunks of ``nj`` (a multiple of 16, so a chunk is
    whole AVX-512 vectors) and rows into ``nib`` blocks of ``mc`` (a multiple of 4).
    The grid aims at >= ``min_tasks`` tasks, preferring to split rows: wide chunks
    amortise the per-``k`` setup of the inner loop.  Columns are split when there
    are too few rows, and into >= 2 chunks when ``by_columns`` (threads own chunks).
    """
    sixteen = _U(16)
    four = _U(4)
    nq = _cdiv(nc, NJ)
    if by_columns and min_tasks > _U(1) and nc >= _U(2) * MIN_SPLIT_NJ:
        nq = max(nq, _U(2))
    if nq * _cdiv(M, four) < min_tasks:
        # Too few groups of 4 rows to make enough tasks: split the columns too.
        nq = max(nq, min(_cdiv(min_tasks, _cdiv(M, four)), nc // MIN_NJ))
    nj = _cdiv(_cdiv(nc, nq), sixteen) * sixteen
    nq = _cdiv(nc, nj)
    nib = max(_cdiv(min_tasks, nq), _cdiv(M, MC))
    mc = _cdiv(_cdiv(M, nib), four) * four
    nib = _cdiv(M, mc)
    return nj, nq, mc, nib


@kernel
def _gemm_serial(M, N, K, a, a_row, a_col, b, b_row, b_col, c, accumulate, mode, kcb, bp):
    """Serial driver: the loops of :func:`_gemm_parallel`, with one task per chunk."""
    by_columns = mode == _DOT
    for jc in range(_U(0), N, NC):
        nc = min(NC, N - jc)
        nj, nq, mc, nib = _plan(M, nc, _U(1), by_columns)
        for pc in range(_U(0), K, kcb):
            kc = min(kcb, K - pc)
            if mode == _PACKED:
                for t in range(nq * _cdiv(kc, PACK_ROWS)):
                    _pack_task(_U(t), b, b_row, b_col, pc, kc, jc, nc, nj, bp)
            overwrite = pc == _U(0) and not accumulate
            src = bp if mode == _PACKED else b
            for t in range(nq * nib):
                _compute_task(_U(t), nq, nib, by_columns, mc, nj, M, N, a, a_row, a_col,
                              pc, kc, jc, nc, src, b_row, b_col, mode, c, overwrite)


@parallel_kernel
def _gemm_parallel(M, N, K, a, a_row, a_col, b, b_row, b_col, c, accumulate, mode, kcb, bp):
    """Parallel driver: per (column block, k block of ``kcb``), pack then compute,
    each a ``prange`` over tasks.

    Tasks write disjoint blocks of ``c`` and packing tasks disjoint parts of
    ``bp``, so there are no races.  Each element of ``c`` is summed in the same
    order whatever the task grid, so results do not depend on the thread count.
    Dot-product tasks split the columns among threads (each reads only its own rows
    of the caller's ``b``); the others split the rows (the packed block is shared,
    and writes to ``c`` never meet inside a cache line except at one row).
    """
    by_columns = mode == _DOT
    for jc in range(_U(0), N, NC):
        nc = min(NC, N - jc)
        nj, nq, mc, nib = _plan(M, nc, MIN_TASKS, by_columns)
        for pc in range(_U(0), K, kcb):
            kc = min(kcb, K - pc)
            if mode == _PACKED:
                for t in numba.prange(nq * _cdiv(kc, PACK_ROWS)):
                    _pack_task(_U(t), b, b_row, b_col, pc, kc, jc, nc, nj, bp)
            overwrite = pc == _U(0) and not accumulate
            src = bp if mode == _PACKED else b
            for t in numba.prange(nq * nib):
                _compute_task(_U(t), nq, nib, by_columns, mc, nj, M, N, a, a_row, a_col,
                              pc, kc, jc, nc, src, b_row, b_col, mode, c, overwrite)


@kernel
def _gemm(M, N, K, a, a_row, a_col, b, b_row, b_col, out, accumulate):
    """``out (+)= A @ B`` with ``A[i, k] = a.flat[i*a_row + k*a_col]``,
    ``B[k, j] = b.flat[k*b_row + j*b_col]``, ``out`` C-contiguous ``(M, N)``.

    Sizes and strides are ``uint64`` and ``accumulate`` a plain ``bool`` (the public
    wrappers convert them), so that one specialisation per dtype serves all three
    layouts and both ``accumulate`` values.
    """
    c = out.reshape(out.size)
    if K == _U(0):
        if not accumulate:
            c[:] = out.dtype.type(0)
        return out
    if M == _U(0) or N == _U(0):
        return out
    af = a.reshape(a.size)
    bf = b.reshape(b.size)
    if b_col == _U(1) and M < PACK_MIN_ROWS:
        mode = _IN_PLACE
    elif b_row == _U(1) and a_col == _U(1) and M < DOT_MAX_ROWS and K >= DOT_MIN_K:
        mode = _DOT
    else:
        mode = _PACKED
    if mode == _PACKED:
        kcb = KC                # also bounds the scratch
    elif M < KBLOCK_MIN_ROWS:
        kcb = K
    elif mode == _DOT:
        kcb = DOT_KC_BYTES // _U(out.itemsize)
    else:
        kcb = KC
    bp = np.empty(min(KC, K) * min(NC, N) if mode == _PACKED else _U(0), dtype=out.dtype)
    args = (M, N, K, af, a_row, a_col, bf, b_row, b_col, c, accumulate, mode, kcb, bp)
    if _U(2) * M * N * K < SERIAL_FLOPS:
        _gemm_serial(*args)
    else:
        _gemm_parallel(*args)
    return out


@kernel
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
    M, K = a.shape
    N = b.shape[1]
    return _gemm(_U(M), _U(N), _U(K), a, _U(K), _U(1), b, _U(N), _U(1), out, accumulate != 0)


@kernel
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
    M, K = a.shape
    N = b.shape[0]
    return _gemm(_U(M), _U(N), _U(K), a, _U(K), _U(1), b, _U(1), _U(K), out, accumulate != 0)


@kernel
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
    K, M = a.shape
    N = b.shape[1]
    return _gemm(_U(M), _U(N), _U(K), a, _U(1), _U(M), b, _U(N), _U(1), out, accumulate != 0)
