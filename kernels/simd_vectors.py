"""A 64-byte SIMD vector type for Numba kernels, and the few operations on it that the
GEMM micro-kernels in :mod:`.matmul` need.

A vector is 16 float32 or 8 float64 lanes: one AVX-512 register, or two AVX2 / four SSE
registers when compiled for an older CPU (LLVM splits it transparently).  Operations are
``numba.core.extending.intrinsic`` functions emitting one LLVM instruction or intrinsic
each; the loops that use them are ordinary ``@njit`` code.  The multiply-add is
``llvm.fmuladd``: a fused multiply-add where the CPU has one, a multiply and an add
otherwise; no fast-math flags, so NaN and Inf propagate.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic, models, register_model

__all__ = ["lanes", "vload", "vstore", "vsplat", "vfma", "vadd", "vsum", "copy8", "transpose_block", "vload_part", "vstore_part"]


# A 64-byte vector (16 float32 or 8 float64: one AVX-512 register; two AVX2 registers or
# four SSE registers when compiled for an older CPU, which LLVM handles transparently).
# Only the operations the kernels need are defined.  The multiply-add is
# llvm.fmuladd: a fused multiply-add where the CPU has one (vfmadd231ps), a multiply and
# an add otherwise; no fast-math flags, so NaN and Inf propagate.


class _Vector(types.Type):
    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = 64 // (dtype.bitwidth // 8)
        super().__init__(name=f"Vector{self.lanes}x{dtype}")


@register_model(_Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


_VECTOR = {types.float32: _Vector(types.float32), types.float64: _Vector(types.float64)}


def _element_pointer(context, builder, array_type, array, index):
    data = cgutils.create_struct_proxy(array_type)(context, builder, value=array).data
    return builder.gep(data, [index])


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
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, context.get_value_type(vector).as_pointer())
        return builder.load(vptr, align=array.dtype.bitwidth // 8)

    return vector(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """``array[index : index + lanes] = value`` (unaligned store)."""
    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, args[2].type.as_pointer()),
                      align=array.dtype.bitwidth // 8)

    return types.void(array, index, value), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane equal to ``scalar`` (vbroadcastss)."""
    vector = _VECTOR[scalar]

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(vector)
        undef = ir.Constant(vtype, ir.Undefined)
        v = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector.lanes), [0] * vector.lanes)
        return builder.shuffle_vector(v, undef, zeros)

    return vector(scalar), codegen


@intrinsic
def vfma(typingctx, x, y, acc):
    """``x * y + acc`` lane by lane (one rounding where the CPU has FMA)."""
    def codegen(context, builder, signature, args):
        vtype = args[0].type
        suffix = "f32" if x.dtype == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                            f"llvm.fmuladd.v{x.lanes}{suffix}")
        return builder.call(fn, args)

    return acc(x, y, acc), codegen


@intrinsic
def vadd(typingctx, x, y):
    """``x + y`` lane by lane."""
    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return x(x, y), codegen


@intrinsic
def vsum(typingctx, v):
    """Sum of the lanes, as a fixed tree (halves added pairwise), so always the same order."""
    def codegen(context, builder, signature, args):
        value = args[0]
        n = v.lanes
        while n > 1:
            n //= 2
            lo = builder.shuffle_vector(value, value, ir.Constant(
                ir.VectorType(ir.IntType(32), n), list(range(n))))
            hi = builder.shuffle_vector(value, value, ir.Constant(
                ir.VectorType(ir.IntType(32), n), list(range(n, 2 * n))))
            value = builder.fadd(lo, hi)
        return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))

    return v.dtype(v), codegen


@intrinsic
def copy8(typingctx, dst, di, src, si):
    """``dst[di : di + 8] = src[si : si + 8]`` as one vector move (a packed panel row)."""
    def codegen(context, builder, signature, args):
        vtype = ir.VectorType(context.get_value_type(src.dtype), 8)
        align = src.dtype.bitwidth // 8
        sp = _element_pointer(context, builder, signature.args[2], args[2], args[3])
        dp = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        v = builder.load(builder.bitcast(sp, vtype.as_pointer()), align=align)
        builder.store(v, builder.bitcast(dp, vtype.as_pointer()), align=align)

    return types.void(dst, di, src, si), codegen


@intrinsic
def transpose_block(typingctx, dst, di, ldd, src, si, lds, size):
    """Transpose one square block of ``size x size`` elements in registers (``size`` a
    constant power of two): ``dst[di + c*ldd + r] = src[si + r*lds + c]``, ``r, c < size``.

    ``size`` row vectors are loaded, transposed by ``log2(size)`` rounds of pairwise
    interleaves (row ``i`` with row ``i + size/2``; on AVX-512 one ``vpermt2ps`` per
    vector per round) and stored as rows: a few shuffles per vector instead of a scalar
    load and store per element.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value

    def codegen(context, builder, signature, args):
        vtype = ir.VectorType(context.get_value_type(src.dtype), n)
        align = src.dtype.bitwidth // 8
        i64 = ir.IntType(64)
        rows = []
        for r in range(n):
            index = builder.add(args[4], builder.mul(args[5], ir.Constant(i64, r)))
            ptr = _element_pointer(context, builder, signature.args[3], args[3], index)
            rows.append(builder.load(builder.bitcast(ptr, vtype.as_pointer()), align=align))
        half = n // 2
        lo = ir.Constant(ir.VectorType(ir.IntType(32), n),
                         [x for i in range(half) for x in (i, n + i)])
        hi = ir.Constant(ir.VectorType(ir.IntType(32), n),
                         [x for i in range(half, n) for x in (i, n + i)])
        for _ in range(n.bit_length() - 1):
            new = []
            for i in range(half):
                new.append(builder.shuffle_vector(rows[i], rows[i + half], lo))
                new.append(builder.shuffle_vector(rows[i], rows[i + half], hi))
            rows = new
        for c in range(n):
            index = builder.add(args[1], builder.mul(args[2], ir.Constant(i64, c)))
            ptr = _element_pointer(context, builder, signature.args[0], args[0], index)
            builder.store(rows[c], builder.bitcast(ptr, vtype.as_pointer()), align=align)

    return types.void(dst, di, ldd, src, si, lds, size), codegen


def _lane_mask(builder, lanes, count):
    """``<lanes x i1>``: lane ``l`` is on iff ``l < count`` (an unsigned 64-bit count)."""
    index = ir.Constant(ir.VectorType(ir.IntType(64), lanes), list(range(lanes)))
    splat = builder.insert_element(ir.Constant(index.type, ir.Undefined), count,
                                   ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(splat, ir.Constant(index.type, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                               [0] * lanes))
    return builder.icmp_unsigned("<", index, splat)


@intrinsic
def vload_part(typingctx, array, index, count):
    """``array[index : index + count]`` in the first ``count`` lanes, zeros after; only
    those elements are read (llvm.masked.load)."""
    vector = _VECTOR[array.dtype]

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(vector)
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, vtype.as_pointer())
        suffix = "f32" if array.dtype == types.float32 else "f64"
        mask = _lane_mask(builder, vector.lanes, args[2])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vptr.type, ir.IntType(32), mask.type,
                                                    vtype]),
            f"llvm.masked.load.v{vector.lanes}{suffix}.p0v{vector.lanes}{suffix}")
        return builder.call(fn, [vptr, ir.Constant(ir.IntType(32), array.dtype.bitwidth // 8),
                                 mask, ir.Constant(vtype, None)])

    return vector(array, index, types.uint64), codegen


@intrinsic
def vstore_part(typingctx, array, index, value, count):
    """``array[index : index + count] = value[:count]`` (llvm.masked.store)."""
    def codegen(context, builder, signature, args):
        vtype = args[2].type
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, vtype.as_pointer())
        suffix = "f32" if array.dtype == types.float32 else "f64"
        mask = _lane_mask(builder, value.lanes, args[3])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vtype, vptr.type, ir.IntType(32),
                                                            mask.type]),
            f"llvm.masked.store.v{value.lanes}{suffix}.p0v{value.lanes}{suffix}")
        builder.call(fn, [args[2], vptr,
                          ir.Constant(ir.IntType(32), array.dtype.bitwidth // 8), mask])

    return types.void(array, index, value, types.uint64), codegen
