"""A SIMD vector type for Numba kernels at the width of the target CPU, and the few
operations on it that the GEMM and :mod:`.simd_tiles` need.

A vector is ``TARGET.vector_bytes`` wide (:mod:`.target`): 64 bytes (16 float32 or
8 float64) on AVX-512, 32 on AVX2, 16 elsewhere, so it is always one register of the CPU
the kernels are compiled for.  Operations are ``numba.core.extending.intrinsic``
functions emitting one LLVM instruction or intrinsic each; the loops that use them are
ordinary ``@njit`` code.  The multiply-add is ``llvm.fmuladd``: a fused multiply-add
where the CPU has one, a multiply and an add otherwise; no fast-math flags, so NaN and
Inf propagate.

The LLVM-building helpers (``element_pointer``, ``splat``, ``fmuladd``, ``lane_mask``,
``masked_load``, ``masked_store``) are shared with :mod:`.simd_tiles`.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic, models, register_model

from .target import TARGET

__all__ = ["lanes", "vload", "vstore", "vsplat", "vfma", "vadd", "vsum", "copy_run",
           "transpose_block", "vload_part", "vstore_part", "vector_lanes"]


def vector_lanes(dtype):
    """Elements of the Numba scalar type ``dtype`` in one vector of the target."""
    return TARGET.vector_bytes // (dtype.bitwidth // 8)


class _Vector(types.Type):
    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = vector_lanes(dtype)
        super().__init__(name=f"Vector{self.lanes}x{dtype}")


@register_model(_Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


_VECTOR = {types.float32: _Vector(types.float32), types.float64: _Vector(types.float64)}
_I32 = ir.IntType(32)


def element_pointer(context, builder, array_type, array, index):
    """LLVM pointer to ``array[index]`` (a 1-D array, a 64-bit index)."""
    data = cgutils.create_struct_proxy(array_type)(context, builder, value=array).data
    return builder.gep(data, [index])


def splat(builder, scalar, lanes):
    """A vector of ``lanes`` copies of ``scalar`` (vbroadcastss)."""
    vtype = ir.VectorType(scalar.type, lanes)
    undef = ir.Constant(vtype, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, lanes),
                                                        [0] * lanes))


def _suffix(vtype):
    return f"v{vtype.count}{'f32' if isinstance(vtype.element, ir.FloatType) else 'f64'}"


def fmuladd(builder, vtype, x, y, acc):
    """``x * y + acc`` lane by lane with ``llvm.fmuladd`` (one rounding where the CPU has
    FMA)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                        f"llvm.fmuladd.{_suffix(vtype)}")
    return builder.call(fn, [x, y, acc])


def lane_mask(builder, lanes, count):
    """``<lanes x i1>``: lane ``l`` is on iff ``l < count`` (an unsigned 64-bit count)."""
    index = ir.Constant(ir.VectorType(ir.IntType(64), lanes), list(range(lanes)))
    return builder.icmp_unsigned("<", index, splat(builder, count, lanes))


def masked_load(context, builder, vtype, ptr, mask, dtype):
    """The lanes of ``*ptr`` where ``mask`` is on, zeros elsewhere; only those lanes are
    read (llvm.masked.load)."""
    vptr = builder.bitcast(ptr, vtype.as_pointer())
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vtype, [vptr.type, _I32, mask.type, vtype]),
        f"llvm.masked.load.{_suffix(vtype)}.p0{_suffix(vtype)}")
    return builder.call(fn, [vptr, ir.Constant(_I32, dtype.bitwidth // 8), mask,
                             ir.Constant(vtype, None)])


def masked_store(builder, value, ptr, mask, dtype):
    """Store the lanes of ``value`` where ``mask`` is on (llvm.masked.store)."""
    vtype = value.type
    vptr = builder.bitcast(ptr, vtype.as_pointer())
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vtype, vptr.type, _I32, mask.type]),
        f"llvm.masked.store.{_suffix(vtype)}.p0{_suffix(vtype)}")
    builder.call(fn, [value, vptr, ir.Constant(_I32, dtype.bitwidth // 8), mask])


@intrinsic
def lanes(typingctx, array):
    """Lanes of a vector of ``array``'s dtype, as a compile-time ``uint64`` constant."""
    lanes = _VECTOR[array.dtype].lanes

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(64), lanes)

    return types.uint64(array), codegen


@intrinsic
def vload(typingctx, array, index):
    """``array[index : index + lanes]`` as a vector (unaligned load)."""
    vector = _VECTOR[array.dtype]

    def codegen(context, builder, signature, args):
        ptr = element_pointer(context, builder, signature.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, context.get_value_type(vector).as_pointer())
        return builder.load(vptr, align=array.dtype.bitwidth // 8)

    return vector(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """``array[index : index + lanes] = value`` (unaligned store)."""
    def codegen(context, builder, signature, args):
        ptr = element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()),
                      align=array.dtype.bitwidth // 8)

    return types.void(array, index, value), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane equal to ``scalar`` (vbroadcastss)."""
    vector = _VECTOR[scalar]

    def codegen(context, builder, signature, args):
        return splat(builder, args[0], vector.lanes)

    return vector(scalar), codegen


@intrinsic
def vfma(typingctx, x, y, acc):
    """``x * y + acc`` lane by lane (one rounding where the CPU has FMA)."""
    def codegen(context, builder, signature, args):
        return fmuladd(builder, args[0].type, *args)

    return acc(x, y, acc), codegen


@intrinsic
def vadd(typingctx, x, y):
    """``x + y`` lane by lane."""
    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return x(x, y), codegen


def reduce_lanes(builder, value, n, combine):
    """Lane 0 of ``value`` (``n`` lanes) folded by ``combine(builder, a, b)`` as a fixed
    tree: the low and high halves combined pairwise until one lane is left, so the order
    of the operations never changes."""
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(_I32, n), list(range(n, 2 * n))))
        value = combine(builder, lo, hi)
    return builder.extract_element(value, ir.Constant(_I32, 0))


@intrinsic
def vsum(typingctx, v):
    """Sum of the lanes, as a fixed tree (halves added pairwise), so always the same order."""
    def codegen(context, builder, signature, args):
        return reduce_lanes(builder, args[0], v.lanes, lambda b, x, y: b.fadd(x, y))

    return v.dtype(v), codegen


@intrinsic
def copy_run(typingctx, dst, di, src, si, count):
    """``dst[di : di + count] = src[si : si + count]`` as one vector move (``count`` a
    literal integer: a packed panel row)."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    n = count.literal_value

    def codegen(context, builder, signature, args):
        vtype = ir.VectorType(context.get_value_type(src.dtype), n)
        align = src.dtype.bitwidth // 8
        sp = element_pointer(context, builder, signature.args[2], args[2], args[3])
        dp = element_pointer(context, builder, signature.args[0], args[0], args[1])
        v = builder.load(builder.bitcast(sp, vtype.as_pointer()), align=align)
        builder.store(v, builder.bitcast(dp, vtype.as_pointer()), align=align)

    return types.void(dst, di, src, si, count), codegen


@intrinsic
def transpose_block(typingctx, dst, di, ldd, src, si, lds, rows, size):
    """Transpose a ``rows x size`` block in registers (literal integers, ``size`` a power
    of two, ``rows <= size``): ``dst[di + c*ldd + r] = src[si + r*lds + c]`` for
    ``r < rows``, ``c < size``.

    ``rows`` vectors of ``size`` elements are loaded (padded to ``size`` with undefined
    rows), transposed by ``log2(size)`` rounds of pairwise interleaves (row ``i`` with row
    ``i + size/2``; on AVX-512 one ``vpermt2ps`` per vector per round), and the first
    ``rows`` lanes of each result are stored: a few shuffles per vector instead of a
    scalar load and store per element.
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(size, types.IntegerLiteral)):
        return None
    m = rows.literal_value
    n = size.literal_value

    def codegen(context, builder, signature, args):
        vtype = ir.VectorType(context.get_value_type(src.dtype), n)
        align = src.dtype.bitwidth // 8
        i64 = ir.IntType(64)
        undef = ir.Constant(vtype, ir.Undefined)
        vectors = []
        for r in range(n):
            if r >= m:
                vectors.append(undef)
                continue
            index = builder.add(args[4], builder.mul(args[5], ir.Constant(i64, r)))
            ptr = element_pointer(context, builder, signature.args[3], args[3], index)
            vectors.append(builder.load(builder.bitcast(ptr, vtype.as_pointer()), align=align))
        half = n // 2
        lo = ir.Constant(ir.VectorType(_I32, n), [x for i in range(half) for x in (i, n + i)])
        hi = ir.Constant(ir.VectorType(_I32, n),
                         [x for i in range(half, n) for x in (i, n + i)])
        for _ in range(n.bit_length() - 1):
            new = []
            for i in range(half):
                new.append(builder.shuffle_vector(vectors[i], vectors[i + half], lo))
                new.append(builder.shuffle_vector(vectors[i], vectors[i + half], hi))
            vectors = new
        out_type = ir.VectorType(vtype.element, m)
        first = ir.Constant(ir.VectorType(_I32, m), list(range(m)))
        for c in range(n):
            value = vectors[c] if m == n else builder.shuffle_vector(vectors[c], undef, first)
            index = builder.add(args[1], builder.mul(args[2], ir.Constant(i64, c)))
            ptr = element_pointer(context, builder, signature.args[0], args[0], index)
            builder.store(value, builder.bitcast(ptr, out_type.as_pointer()), align=align)

    return types.void(dst, di, ldd, src, si, lds, rows, size), codegen


@intrinsic
def vload_part(typingctx, array, index, count):
    """``array[index : index + count]`` in the first ``count`` lanes, zeros after; only
    those elements are read (llvm.masked.load)."""
    vector = _VECTOR[array.dtype]

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(vector)
        ptr = element_pointer(context, builder, signature.args[0], args[0], args[1])
        return masked_load(context, builder, vtype, ptr,
                           lane_mask(builder, vector.lanes, args[2]), array.dtype)

    return vector(array, index, types.uint64), codegen


@intrinsic
def vstore_part(typingctx, array, index, value, count):
    """``array[index : index + count] = value[:count]`` (llvm.masked.store)."""
    def codegen(context, builder, signature, args):
        ptr = element_pointer(context, builder, signature.args[0], args[0], args[1])
        masked_store(builder, args[2], ptr, lane_mask(builder, value.lanes, args[3]),
                     array.dtype)

    return types.void(array, index, value, types.uint64), codegen

