"""Register tiles: a block of ``rows x vectors`` SIMD accumulators as one Numba value.

A GEMM micro-kernel keeps a block of the output in registers while it runs along ``k``.
Written as separate variables per accumulator, each tile shape needs its own hand-unrolled
code; written as an array, LLVM keeps it in memory.  Here the block is one value of a
small Numba type, :class:`Tile`, whose LLVM representation is an array of vectors
(``[rows*vectors x <lanes x float>]``) passed by value: after Numba's variables are
promoted to registers, LLVM splits it into ``rows * vectors`` independent vector
registers.  The shape is part of the type (``Tile(float32, 6, 2)``), so one Python
function serves every shape: the shapes of :data:`.target.TILES` per instruction set.

Operations (each an ``intrinsic`` emitting straight-line LLVM code, unrolled over the
tile; the loops around them are ordinary kernels):

* ``tile_zeros(like, rows, vectors)``: a zero tile (``rows``, ``vectors`` literals,
  e.g. module constants); ``like`` gives the dtype.
* ``tile_load(like, c, c0, ldc)`` / ``tile_store(c, c0, ldc, tile)``: row ``r`` of the
  block is ``c[c0 + r*ldc : + vectors*lanes]``.
* ``tile_load_part(like, c, c0, ldc, mr, nv)`` / ``tile_store_part(c, c0, ldc, tile,
  mr, nv)``: only rows ``r < mr`` and columns ``< nv`` are read or written (masked);
  the rest reads as zero.
* ``tile_fma_bcast(tile, a, a0, b, b0)``: the rank-1 update
  ``T[r, :] += a[a0 + r] * b[b0 : b0 + vectors*lanes]`` (a packed micro-panel).
* ``tile_fma_bcast_rows(tile, a, a0, a_rs, mr, b, b0)``: the same with the scalar of
  row ``r`` at ``a[a0 + min(r, mr-1)*a_rs]`` (the left operand read in place).
* ``tile_fma_dot(tile, a, a0, a_rs, mr, b, b0, b_rs, nr)``: dot products along ``k``:
  ``T[r, s] += a[a0 + r'*a_rs : + lanes] * b[b0 + s'*b_rs : + lanes]`` lane by lane, with
  ``r' = min(r, mr-1)``, ``s' = min(s, nr-1)``.
* ``tile_sums(tile, out)``: ``out[r*vectors + s] = `` the sum of the lanes of ``T[r, s]``
  (a fixed tree, always in the same order).
* ``tile_rows(tile)``, ``tile_vectors(tile)``, ``tile_lanes(tile)``: the shape, as
  compile-time ``uint64`` constants.

Offsets, strides and counts are unsigned 64-bit integers; clamped rows (``min(r, mr-1)``)
re-read a valid row instead of reading out of bounds, and masked loads read only valid
elements.  Masks appear only where a tile is loaded from or stored to the output, never
in the multiply-add updates that run inside the ``k`` loop: on AVX2 and SSE a mask takes
a vector register, which the accumulators need (a test checks that no inner loop spills).  Multiply-adds are ``llvm.fmuladd`` without fast-math flags (see
:mod:`.simd_vectors`).
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic, models, register_model

from .simd_vectors import (element_pointer, fmuladd, lane_mask, masked_load, masked_store,
                           splat, vector_lanes)

__all__ = ["Tile", "tile_zeros", "tile_load", "tile_store", "tile_load_part",
           "tile_store_part", "tile_fma_bcast", "tile_fma_bcast_rows", "tile_fma_dot",
           "tile_sums", "tile_add_load", "tile_prefetch", "tile_rows", "tile_vectors", "tile_lanes"]

_I64 = ir.IntType(64)


class Tile(types.Type):
    """``rows x vectors`` SIMD vectors of ``dtype`` (see the module docstring)."""

    def __init__(self, dtype, rows, vectors):
        self.dtype = dtype
        self.rows = rows
        self.vectors = vectors
        self.lanes = vector_lanes(dtype)
        super().__init__(name=f"Tile{rows}x{vectors}x{self.lanes}{dtype}")


@register_model(Tile)
class _TileModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        vector = ir.VectorType(lane, fe_type.lanes)
        super().__init__(dmm, fe_type, ir.ArrayType(vector, fe_type.rows * fe_type.vectors))


def _const(value):
    return ir.Constant(_I64, value)


def _vector_type(context, tile):
    return ir.VectorType(context.get_value_type(tile.dtype), tile.lanes)


def _load(context, builder, array_type, array, index, vtype):
    ptr = builder.bitcast(element_pointer(context, builder, array_type, array, index),
                          vtype.as_pointer())
    return builder.load(ptr, align=array_type.dtype.bitwidth // 8)


def _store(context, builder, array_type, array, index, value):
    ptr = builder.bitcast(element_pointer(context, builder, array_type, array, index),
                          value.type.as_pointer())
    builder.store(value, ptr, align=array_type.dtype.bitwidth // 8)


def _clamped(builder, r, count):
    """``min(r, count - 1)`` for a constant ``r`` and a run-time ``count >= 1``."""
    last = builder.sub(count, _const(1))
    return builder.select(builder.icmp_unsigned("<", _const(r), count), _const(r), last)


def _column_masks(builder, tile, nv):
    """Per vector ``v`` of a row: the mask of its lanes below ``nv`` (columns counted from
    the start of the row)."""
    masks = []
    for v in range(tile.vectors):
        offset = _const(v * tile.lanes)
        # max(nv - v*lanes, 0) valid lanes in vector v
        left = builder.select(builder.icmp_unsigned(">", nv, offset), builder.sub(nv, offset),
                              _const(0))
        masks.append(lane_mask(builder, tile.lanes, left))
    return masks


def _literal_shape(rows, vectors):
    if not isinstance(rows, types.IntegerLiteral) or not isinstance(vectors,
                                                                    types.IntegerLiteral):
        return None
    return rows.literal_value, vectors.literal_value


@intrinsic
def tile_zeros(typingctx, like, rows, vectors):
    """A tile of zeros of ``like``'s dtype, ``rows x vectors`` (literal integers)."""
    shape = _literal_shape(rows, vectors)
    if shape is None:
        return None
    tile = Tile(like.dtype, *shape)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(tile), None)

    return tile(like, rows, vectors), codegen


@intrinsic
def tile_load(typingctx, like, c, c0, ldc):
    """A tile of ``like``'s shape read from ``c`` (row ``r`` at ``c0 + r*ldc``)."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, like)
        value = ir.Constant(context.get_value_type(like), None)
        for r in range(like.rows):
            row = builder.add(args[2], builder.mul(args[3], _const(r)))
            for v in range(like.vectors):
                x = _load(context, builder, signature.args[1], args[1],
                          builder.add(row, _const(v * like.lanes)), vtype)
                value = builder.insert_value(value, x, r * like.vectors + v)
        return value

    return like(like, c, c0, ldc), codegen


@intrinsic
def tile_store(typingctx, c, c0, ldc, tile):
    """Write ``tile`` to ``c`` (row ``r`` at ``c0 + r*ldc``)."""
    def codegen(context, builder, signature, args):
        for r in range(tile.rows):
            row = builder.add(args[1], builder.mul(args[2], _const(r)))
            for v in range(tile.vectors):
                _store(context, builder, signature.args[0], args[0],
                       builder.add(row, _const(v * tile.lanes)),
                       builder.extract_value(args[3], r * tile.vectors + v))

    return types.void(c, c0, ldc, tile), codegen


def _masked_cells(context, builder, array_type, array, c0, ldc, tile, mr, nv):
    """``(index in the tile, pointer, lane mask)`` per vector of a partial tile stored at
    ``c0`` with row stride ``ldc``: rows ``r >= mr`` entirely masked off (their pointer
    clamped to row ``mr - 1``), lanes of columns ``>= nv`` masked off."""
    masks = _column_masks(builder, tile, nv)
    for r in range(tile.rows):
        in_rows = splat(builder, builder.icmp_unsigned("<", _const(r), mr), tile.lanes)
        row = builder.add(c0, builder.mul(ldc, _clamped(builder, r, mr)))
        for v in range(tile.vectors):
            ptr = element_pointer(context, builder, array_type, array,
                                  builder.add(row, _const(v * tile.lanes)))
            yield r * tile.vectors + v, ptr, builder.and_(masks[v], in_rows)


@intrinsic
def tile_load_part(typingctx, like, c, c0, ldc, mr, nv):
    """Rows ``r < mr`` and columns ``< nv`` of a tile of ``like``'s shape from ``c``;
    every other element is zero and is not read."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, like)
        value = ir.Constant(context.get_value_type(like), None)
        for i, ptr, mask in _masked_cells(context, builder, signature.args[1], args[1],
                                          args[2], args[3], like, args[4], args[5]):
            value = builder.insert_value(
                value, masked_load(context, builder, vtype, ptr, mask, like.dtype), i)
        return value

    return like(like, c, c0, ldc, types.uint64, types.uint64), codegen


@intrinsic
def tile_store_part(typingctx, c, c0, ldc, tile, mr, nv):
    """Write rows ``r < mr`` and columns ``< nv`` of ``tile`` to ``c``; nothing else of
    ``c`` is touched."""
    def codegen(context, builder, signature, args):
        for i, ptr, mask in _masked_cells(context, builder, signature.args[0], args[0],
                                          args[1], args[2], tile, args[4], args[5]):
            masked_store(builder, builder.extract_value(args[3], i), ptr, mask, tile.dtype)

    return types.void(c, c0, ldc, tile, types.uint64, types.uint64), codegen


def _bcast_update(context, builder, tile, value, scalars, ys):
    """``T[r, v] += scalars[r] * ys[v]`` for the whole tile."""
    vtype = _vector_type(context, tile)
    for r in range(tile.rows):
        x = splat(builder, scalars[r], tile.lanes)
        for v in range(tile.vectors):
            i = r * tile.vectors + v
            acc = builder.extract_value(value, i)
            value = builder.insert_value(value, fmuladd(builder, vtype, x, ys[v], acc), i)
    return value


@intrinsic
def tile_fma_bcast(typingctx, tile, a, a0, b, b0):
    """``T[r, :] += a[a0 + r] * b[b0 : b0 + vectors*lanes]`` for every row ``r``."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, tile)
        ys = [_load(context, builder, signature.args[3], args[3],
                    builder.add(args[4], _const(v * tile.lanes)), vtype)
              for v in range(tile.vectors)]
        scalars = [builder.load(element_pointer(context, builder, signature.args[1], args[1],
                                                builder.add(args[2], _const(r))))
                   for r in range(tile.rows)]
        return _bcast_update(context, builder, tile, args[0], scalars, ys)

    return tile(tile, a, a0, b, b0), codegen


@intrinsic
def tile_fma_bcast_rows(typingctx, tile, a, a0, a_rs, mr, b, b0):
    """``T[r, :] += a[a0 + min(r, mr-1)*a_rs] * b[b0 : b0 + vectors*lanes]``: the rank-1
    update with the left operand read in place (row stride ``a_rs``, rows past ``mr``
    repeating the last one)."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, tile)
        ys = [_load(context, builder, signature.args[5], args[5],
                    builder.add(args[6], _const(v * tile.lanes)), vtype)
              for v in range(tile.vectors)]
        scalars = []
        for r in range(tile.rows):
            index = builder.add(args[2], builder.mul(args[3], _clamped(builder, r, args[4])))
            scalars.append(builder.load(element_pointer(context, builder, signature.args[1],
                                                        args[1], index)))
        return _bcast_update(context, builder, tile, args[0], scalars, ys)

    return tile(tile, a, a0, types.uint64, types.uint64, b, b0), codegen


@intrinsic
def tile_fma_dot(typingctx, tile, a, a0, a_rs, mr, b, b0, b_rs, nr):
    """``T[r, s] += a[a0 + r'*a_rs : + lanes] * b[b0 + s'*b_rs : + lanes]`` lane by lane,
    ``r' = min(r, mr-1)``, ``s' = min(s, nr-1)``: ``rows x vectors`` dot products advanced
    by one vector of ``k``."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, tile)
        xs = [_load(context, builder, signature.args[1], args[1],
                    builder.add(args[2], builder.mul(args[3], _clamped(builder, r, args[4]))),
                    vtype)
              for r in range(tile.rows)]
        value = args[0]
        for s in range(tile.vectors):
            y = _load(context, builder, signature.args[5], args[5],
                      builder.add(args[6], builder.mul(args[7], _clamped(builder, s, args[8]))),
                      vtype)
            for r in range(tile.rows):
                i = r * tile.vectors + s
                acc = builder.extract_value(value, i)
                value = builder.insert_value(value, fmuladd(builder, vtype, xs[r], y, acc), i)
        return value

    return tile(tile, a, a0, types.uint64, types.uint64, b, b0, types.uint64,
                types.uint64), codegen


@intrinsic
def tile_sums(typingctx, tile, out):
    """``out[r*vectors + s] = sum of the lanes of T[r, s]`` (halves added pairwise: the
    same order every time)."""
    def codegen(context, builder, signature, args):
        for i in range(tile.rows * tile.vectors):
            value = builder.extract_value(args[0], i)
            n = tile.lanes
            while n > 1:
                n //= 2
                lo = builder.shuffle_vector(value, value, ir.Constant(
                    ir.VectorType(ir.IntType(32), n), list(range(n))))
                hi = builder.shuffle_vector(value, value, ir.Constant(
                    ir.VectorType(ir.IntType(32), n), list(range(n, 2 * n))))
                value = builder.fadd(lo, hi)
            total = builder.extract_element(value, ir.Constant(ir.IntType(32), 0))
            builder.store(total, element_pointer(context, builder, signature.args[1], args[1],
                                                 _const(i)))

    return types.void(tile, out), codegen


@intrinsic
def tile_add_load(typingctx, tile, c, c0, ldc):
    """``tile + C``, with ``C`` of the tile's shape read from ``c`` (row ``r`` at
    ``c0 + r*ldc``): the micro-kernel adds the output it accumulates into after its
    ``k`` loop, so the loop never waits for ``C`` to arrive from memory."""
    def codegen(context, builder, signature, args):
        vtype = _vector_type(context, tile)
        value = args[0]
        for r in range(tile.rows):
            row = builder.add(args[2], builder.mul(args[3], _const(r)))
            for v in range(tile.vectors):
                i = r * tile.vectors + v
                x = _load(context, builder, signature.args[1], args[1],
                          builder.add(row, _const(v * tile.lanes)), vtype)
                value = builder.insert_value(value, builder.fadd(builder.extract_value(value, i), x), i)
        return value

    return tile(tile, c, c0, ldc), codegen


@intrinsic
def tile_prefetch(typingctx, like, c, c0, ldc):
    """Prefetch (for writing, into L1) the cache lines of a tile of ``like``'s shape at
    ``c0`` in ``c``: issued before a micro-kernel's ``k`` loop, the output's lines arrive
    while it computes."""
    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        width = like.vectors * like.lanes * (like.dtype.bitwidth // 8)
        step = 64 // (like.dtype.bitwidth // 8)
        for r in range(like.rows):
            row = builder.add(args[2], builder.mul(args[3], _const(r)))
            for offset in range(0, max(width // 64, 1)):
                ptr = element_pointer(context, builder, signature.args[1], args[1],
                                      builder.add(row, _const(offset * step)))
                builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 1),
                                  ir.Constant(i32, 3), ir.Constant(i32, 1)])

    return types.void(like, c, c0, ldc), codegen


def _shape_constant(attribute):
    @intrinsic
    def shape(typingctx, tile):
        if not isinstance(tile, Tile):
            return None
        value = getattr(tile, attribute)

        def codegen(context, builder, signature, args):
            return _const(value)

        return types.uint64(tile), codegen
    shape.__doc__ = f"The tile's {attribute}, as a compile-time ``uint64`` constant."
    return shape


tile_rows = _shape_constant("rows")
tile_vectors = _shape_constant("vectors")
tile_lanes = _shape_constant("lanes")
