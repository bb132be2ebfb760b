"""One task of the GEMM: a block of the output computed with the tiles of
:mod:`.gemm_tiles`, packing included, then the bias/activation epilogue.

:func:`_task` is about three quarters of the GEMM's code, so it is compiled once per dtype
as a C callback (``numba.cfunc``, cached like the kernels; :func:`_compile_task`) and the
core in :mod:`.matmul` calls it through its address (:func:`_task_function`, an indirect
call): the code is optimised once instead of once per caller (see "Compile time" in
:mod:`.matmul`).  The blocking parameters and the task modes are defined here; the
dispatch rules that choose a mode live with the core (:func:`.matmul._gemm`).
"""
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from ._jit import kernel
from .epilogue import bias_act_run
from .gemm_tiles import (DOT_COLS, DOT_ROW_COLS, DOT_ROWS, LOW_ROWS, MR, NARROW_ROWS,
                         NARROW_VECTORS, ROW_VECTORS, ROWS_ROWS, ROWS_VECTORS, dot_row_tile,
                         dot_tile, narrow_tile, pack_a, pack_b, panel_width, prefetch_output,
                         row_tile, rows_tile, tile_bcast, tile_bcast_low, tile_dot,
                         tile_in_place)
from .simd_vectors import lanes as _lanes
from .target import TARGET

_U = np.uint64
_internal = kernel(no_cpython_wrapper=True)

# --------------------------------------------------------------------------- blocking
# Cache blocking follows the caches of the machine (kernels/target.py), and is passed
# to the compiled task at run time (see blocking()), never baked into machine code.


def blocking(itemsize, target=TARGET):
    """``(kc, nb, mc, dot_kc)`` in elements for the broadcast micro-kernel and the dot
    tiles, from the target's L1d and L2 sizes.

    * ``kc`` (the k block): a row of a packed panel is 1/24 of L1d (48 KiB: 2 KiB, 512
      float32; 32 KiB: 1.3 KiB, 336 float32), so a ``kc x NR`` panel of ``B`` and the
      ``MR x kc`` micro-panels of ``A`` streaming past it share L1d and L2.  Measured on
      an AVX-512 Xeon (48 KiB L1d), AVX-512 and AVX2 paths: 512 beat 192, 256 and 384 by
      5-10% and 768 by 0-10%; fewer k blocks also mean fewer passes over the output.
    * ``nb`` (the column block): the ``kc x nb`` block of ``B`` fills half of L2
      (2 MiB: 512 x 512 float32; 512 KiB: 336 x 192), a multiple of the micro-tile width.
    * ``mc``: rows of ``A`` packed at a time, about 64, a multiple of ``MR``.
    * ``dot_kc``: the k block of the dot-product tiles: their ``R + S`` rows of ``A`` and
      ``B`` fill L1d (32 KiB, 4 + 4 rows, float32: 1024), a multiple of 64.
    """
    rows, vectors = target.tiles()["bcast"]
    nr = vectors * target.lanes(itemsize)
    kc = max(128, min(1024, target.l1d_bytes // 24 // itemsize // 16 * 16))
    nb = max(nr, target.l2_bytes // 2 // (kc * itemsize) // nr * nr)
    mc = rows * max(1, 64 // rows)
    dot_rows, dot_cols = target.tiles()["dot"]
    dot_kc = max(64, target.l1d_bytes // ((dot_rows + dot_cols) * itemsize) // 64 * 64)
    return kc, nb, mc, dot_kc


# Modes of _task.
_BCAST = 0     # broadcast micro-kernel, B read in place (row-major, few rows)
_PACKED = 1    # broadcast micro-kernel, B packed into panels
_DOT = 2       # dot-product tiles; A and B both contiguous along k
_NARROW = 3    # narrow tiles (a few columns), A and a row-major B read in place
_ROWS = 4      # rows tiles (a few rows), A and a row-major B read in place
_EPILOGUE_ONLY = 5  # no product (K = 0): the epilogue alone


# --------------------------------------------------------------------------- one task
# Compiled by _compile_task() as a C callback (numba.cfunc), not with @kernel: see
# "Compile time" in the module docstring.
def _task(t, grid_n, bm, bn, mode, M, N, K, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc,
          accumulate, act, bias, p0, p1, kcb, nbb, mcb, dot_kcb):
    """Block ``t`` of the task grid: ``C[i0:i1, j0:j1] (+)= A @ B`` over all of ``k``,
    then the epilogue ``act`` (if ``>= 0``) on the block, tile by tile.

    ``C[i, j] = c[i*ldc + j]``; the block is row block ``t // grid_n`` (``bm`` rows) and
    column block ``t % grid_n`` (``bn`` columns).  ``mode`` selects the tiles (see the
    mode constants and :func:`.matmul._gemm`); ``_DOT`` reads ``A[i, k] = a[i*a_rs + k]``
    and ``B[k, j] = b[j*b_cs + k]``, the others need ``b_cs == 1`` unless ``B`` is packed.
    ``_EPILOGUE_ONLY`` applies the epilogue alone (``K = 0``).  ``kcb``, ``nbb``, ``mcb``,
    ``dot_kcb``: the cache blocking (:func:`blocking`).
    """
    i0 = (t // grid_n) * bm
    j0 = (t % grid_n) * bn
    i1 = min(M, i0 + bm)
    j1 = min(N, j0 + bn)
    if i0 >= i1 or j0 >= j1:
        return
    epilogue = act >= 0
    if mode == _EPILOGUE_ONLY:
        for i in range(i0, i1):
            bias_act_run(c, i * ldc + j0, j1 - j0, bias, j0, act, p0, p1)
        return
    if mode == _DOT:
        one_row = M == _U(1)    # one row: a row of dot products, no wasted multiply-adds
        tr = _U(1) if one_row else _U(DOT_ROWS)
        ts = _U(DOT_ROW_COLS) if one_row else _U(DOT_COLS)
        sums = np.empty(max(DOT_ROWS * DOT_COLS, DOT_ROW_COLS), dtype=c.dtype)
        for pc in range(_U(0), K, dot_kcb):
            kc = min(dot_kcb, K - pc)
            load_c = accumulate or pc > _U(0)
            for jt in range(j0, j1, ts):
                nr = min(ts, j1 - jt)
                for it in range(i0, i1, tr):
                    mr = min(tr, i1 - it)
                    if one_row:
                        tile_dot(dot_row_tile(c), sums, kc, a, it * a_rs + pc, a_rs, mr, b,
                                 jt * b_cs + pc, b_cs, nr, c, it * ldc + jt, ldc, load_c)
                    else:
                        tile_dot(dot_tile(c), sums, kc, a, it * a_rs + pc, a_rs, mr, b,
                                 jt * b_cs + pc, b_cs, nr, c, it * ldc + jt, ldc, load_c)
        if epilogue:
            for i in range(i0, i1):
                bias_act_run(c, i * ldc + j0, j1 - j0, bias, j0, act, p0, p1)
        return
    if mode == _NARROW or mode == _ROWS:
        # The left operand read in place, a few columns or a few rows at a time; a column
        # group narrower than the tile reads a zero-padded copy of its columns of B.
        narrow = mode == _NARROW
        one_row = not narrow and M == _U(1)
        rows = _U(NARROW_ROWS) if narrow else _U(ROWS_ROWS)
        vectors = _U(ROWS_VECTORS)
        if narrow:
            vectors = _U(NARROW_VECTORS)
        elif one_row:
            vectors = _U(ROW_VECTORS)
        w = vectors * _lanes(c)
        padded = np.empty(K * w if (j1 - j0) % w != _U(0) else _U(0), dtype=c.dtype)
        for jv in range(j0, j1, w):
            nv = min(w, j1 - jv)
            src = b
            s0 = jv
            ld = b_rs
            if nv < w:
                pack_b(b, b_rs, _U(1), _U(0), K, jv, nv, w, padded)
                src = padded
                s0 = _U(0)
                ld = w
            for ib in range(i0, i1, rows):
                mr = min(rows, i1 - ib)
                c0 = ib * ldc + jv
                if narrow:
                    tile_in_place(narrow_tile(c), K, a, ib * a_rs, a_rs, a_cs, mr, src, s0,
                                  ld, nv, c, c0, ldc, accumulate)
                elif one_row:
                    tile_in_place(row_tile(c), K, a, ib * a_rs, a_rs, a_cs, mr, src, s0,
                                  ld, nv, c, c0, ldc, accumulate)
                else:
                    tile_in_place(rows_tile(c), K, a, ib * a_rs, a_rs, a_cs, mr, src, s0,
                                  ld, nv, c, c0, ldc, accumulate)
                if epilogue:
                    for r in range(mr):
                        bias_act_run(c, c0 + r * ldc, nv, bias, jv, act, p0, p1)
        return
    mr_full = _U(MR)
    nr = panel_width(c)
    ap = np.empty(mcb * kcb, dtype=c.dtype)
    bp = np.empty(kcb * (nbb if mode == _PACKED else nr), dtype=c.dtype)
    tile = np.empty(mr_full * nr, dtype=c.dtype)
    for jb in range(j0, j1, nbb):
        nb = min(nbb, j1 - jb)
        for pc in range(_U(0), K, kcb):
            kc = min(kcb, K - pc)
            load_c = accumulate or pc > _U(0)
            last = pc + kc == K
            if mode == _PACKED:
                pack_b(b, b_rs, b_cs, pc, kc, jb, nb, nr, bp)
            elif nb % nr != _U(0):
                # B in place: only a ragged last panel is packed (zero-padded).
                jl = nb // nr * nr
                pack_b(b, b_rs, b_cs, pc, kc, jb + jl, nb - jl, nr, bp)
            for ic in range(i0, i1, mcb):
                mc = min(mcb, i1 - ic)
                pack_a(a, a_rs, a_cs, ic, mc, pc, kc, ap)
                # Each panel of B (kc x NR) is read once per MC rows and stays in L1 while
                # the micro-panels of A (MR x kc) stream past it from L2.  (Two calls
                # rather than a variable holding b or bp: an array variable assigned in
                # the loop costs atomic reference-count updates.)
                for jr in range(_U(0), nb, nr):
                    w = min(nr, nb - jr)
                    in_place = mode != _PACKED and w == nr
                    s0 = pc * b_rs + jb + jr if in_place else (jr * kc if mode == _PACKED
                                                              else _U(0))
                    ld = b_rs if in_place else nr
                    prefetch_output(c, ic * ldc + jb + jr, ldc)
                    for ib in range(ic, ic + mc, mr_full):
                        mr = min(mr_full, ic + mc - ib)
                        c0 = ib * ldc + jb + jr
                        # The next tile's lines of C arrive while this one computes: the
                        # tiles run down a column strip of C, which no hardware prefetcher
                        # follows, and with a short k loop the stores would wait on them.
                        prefetch_output(c, c0 + mr_full * ldc, ldc)
                        a_off = (ib - ic) * kc
                        if mr != mr_full or w != nr:
                            _ragged_tile(kc, ap, a_off, b if in_place else bp, s0, ld, c, c0,
                                         ldc, load_c, mr, w, tile)
                        elif in_place:
                            tile_bcast(kc, ap, a_off, b, s0, ld, c, c0, ldc, load_c)
                        else:
                            tile_bcast(kc, ap, a_off, bp, s0, ld, c, c0, ldc, load_c)
                if last and epilogue:
                    # The block (mc rows x nb columns) is final and still in L2.
                    for i in range(ic, ic + mc):
                        bias_act_run(c, i * ldc + jb, nb, bias, jb, act, p0, p1)


@_internal
def _ragged_tile(kc, ap, a_off, src, s0, ld, c, c0, ldc, load_c, mr, w, tile):
    """A ragged micro-tile of ``C`` at ``c0`` (``mr x w`` valid of ``MR x NR``), computed
    through the scratch ``tile`` so the micro-kernel is never masked.  (Kept out of the
    loop over whole tiles: a call there, even to this small function, halved the speed of
    products with a short ``k``, such as the weight gradient at batch 32.)"""
    nr = panel_width(c)
    if load_c:
        for r in range(mr):
            for j in range(w):
                tile[r * nr + j] = c[c0 + r * ldc + j]
    if mr <= _U(LOW_ROWS):
        tile_bcast_low(kc, ap, a_off, src, s0, ld, tile, _U(0), nr, load_c)
    else:
        tile_bcast(kc, ap, a_off, src, s0, ld, tile, _U(0), nr, load_c)
    for r in range(mr):
        for j in range(w):
            c[c0 + r * ldc + j] = tile[r * nr + j]


def _task_signature(dtype):
    """The C signature of the compiled :func:`_task` for arrays of ``dtype``."""
    array = types.Array(numba.from_dtype(dtype), 1, "C")
    u = types.uint64
    return types.void(u, u, u, u, types.int64, u, u, u, array, u, u, array, u, u, array, u,
                      types.boolean, types.int64, array, types.float64, types.float64,
                      u, u, u, u)


_TASKS = {}     # dtype -> the compiled task (a numba.cfunc; kept alive here)


def _compile_task(dtype):
    """:func:`_task` compiled for ``dtype`` (on first use; later processes load it from
    the cache like any kernel)."""
    task = _TASKS.get(dtype)
    if task is None:
        task = _TASKS[dtype] = numba.cfunc(_task_signature(dtype), cache=True,
                                           error_model="numpy")(_task)
    return task


@intrinsic
def _task_function(typingctx, address, like):
    """The compiled :func:`_task` for ``like``'s dtype, called through its ``address``.

    A first-class function value: calling it is an indirect call, so the code that calls
    it does not link (and re-optimise) the whole task code.
    """
    if not isinstance(like, types.Array):
        return None
    fn_type = types.FunctionType(_task_signature(numba.np.numpy_support.as_dtype(like.dtype)))

    def codegen(context, builder, signature, args):
        fn = cgutils.create_struct_proxy(fn_type)(context, builder)
        fn.c_addr = builder.inttoptr(args[0], context.get_value_type(types.voidptr))
        fn.py_addr = ir.Constant(context.get_value_type(types.voidptr), None)
        fn.jit_addr = ir.Constant(context.get_value_type(types.voidptr), None)
        return fn._getvalue()

    return fn_type(types.uint64, like), codegen
