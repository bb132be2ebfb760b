"""Full-width vector ``exp`` and row reductions for the attention kernels' softmax blocks.

LLVM's tuning for AVX-512 CPUs prefers 256-bit vectors for the loops it vectorises by
itself, and a row whose length is not a multiple of the vector ends in scalar code: the
softmax block's ``exp``, row maximum and row sum ran at half width with a scalar tail of
up to 7 ``exp`` calls per row.  These intrinsics work on the target's full vector
(:mod:`.simd_vectors`: 16 float32 on AVX-512) and end a row with one masked vector:

* ``vexp_minus(x, shift)``: ``exp(x - shift)`` lane by lane, the algorithm of
  :func:`.vmath.exp` (``x = n ln2 + r``, a polynomial in ``r``, ``2**n`` as two factors
  built from integer bits; overflow gives inf, ``-inf`` gives 0, NaN stays NaN) written
  as straight-line vector IR; multiply-adds are ``llvm.fmuladd`` without fast-math flags.
  Unlike :func:`.vmath.exp`, results that would be subnormal are 0: x86 CPUs compute a
  subnormal result in a microcode assist of ~100-150 cycles, and every masked logit
  (``-inf``, or a lane past the end of a row) went through one (a 28-key row took 4x
  longer).  In a softmax whose largest term is 1 a term below the smallest normal
  number (1.2e-38 in float32) changes no sum.
* ``vload_fill(array, index, count, fill)``: ``array[index : index + count]`` in the
  first ``count`` lanes, ``fill`` in the others (only ``count`` elements are read).
* ``vmaxnum(a, b)``: lane-wise IEEE maxNum (a NaN operand ignored, as
  :func:`.simd_intrinsics.maxnum`); ``vmax_lanes(v)``: the maximum of the lanes by a
  fixed tree.
"""
import math

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from . import vmath
# _VECTOR: simd_vectors' vector types by dtype (the types its intrinsics return)
from .simd_vectors import (_VECTOR, element_pointer, fmuladd, lane_mask, masked_load,
                           reduce_lanes, splat)

__all__ = ["vexp_minus", "vload_fill", "vmaxnum", "vmax_lanes"]


def _exp_constants(dtype):
    """The constants of :func:`.vmath.exp` for ``dtype`` (float32 or float64):
    ``(log2e, shift, shift_bits, ln2_hi, ln2_lo, hi, lo, coefficients from the highest
    power down to r**2, bias, mantissa bits, integer bits)``; below ``lo`` the result is
    0, above it normal."""
    if dtype == types.float32:
        # lo: e**-87 = 1.6e-38 is normal (float32's smallest is 1.18e-38 = e**-87.3)
        return (float(vmath._LOG2E_32), float(vmath._SHIFT_32), int(vmath._SHIFT_BITS_32),
                float(vmath._LN2_HI_32), float(vmath._LN2_LO_32), float(vmath._EXP_HI_32),
                -87.0,
                [float(c) for c in (vmath._P7_32, vmath._P6_32, vmath._P5_32, vmath._P4_32,
                                    vmath._P3_32, vmath._P2_32)],
                int(vmath._BIAS_32), vmath._MANT_32, 32)
    # lo: e**-708 = 3.3e-308 is normal (float64's smallest is 2.2e-308 = e**-708.4)
    return (vmath._LOG2E_64, vmath._SHIFT_64, int(vmath._SHIFT_BITS_64), vmath._LN2_HI_64,
            vmath._LN2_LO_64, vmath._EXP_HI_64, -708.0,
            [1.0 / math.factorial(k) for k in range(13, 1, -1)],
            int(vmath._BIAS_64), vmath._MANT_64, 64)


def _fconst(vtype, value):
    return ir.Constant(vtype, [ir.Constant(vtype.element, value)] * vtype.count)


def _iconst(itype, n, value):
    return ir.Constant(ir.VectorType(itype, n), [ir.Constant(itype, value)] * n)


def _exp_ir(builder, x, dtype):
    """``exp(x)`` lane by lane for a vector ``x`` (see the module docstring)."""
    vtype = x.type
    n = vtype.count
    (log2e, shift, shift_bits, ln2_hi, ln2_lo, hi, lo, coefficients, bias, mant,
     bits) = _exp_constants(dtype)
    itype = ir.IntType(bits)
    f = lambda v: _fconst(vtype, v)         # noqa: E731
    # clamps as vmath.exp: a NaN fails both comparisons and passes unchanged; below lo
    # the lane computes exp(lo), a normal number, and is replaced by 0 at the end
    xc = builder.select(builder.fcmp_ordered(">", x, f(hi)), f(hi), x)
    tiny = builder.fcmp_ordered("<", xc, f(lo))
    xc = builder.select(tiny, f(lo), xc)
    t = fmuladd(builder, vtype, xc, f(log2e), f(shift))
    nf = builder.fsub(t, f(shift))                      # round(x / ln 2)
    neg = builder.fneg(nf)
    r = fmuladd(builder, vtype, neg, f(ln2_hi), xc)
    r = fmuladd(builder, vtype, neg, f(ln2_lo), r)
    p = f(coefficients[0])
    for c in coefficients[1:]:
        p = fmuladd(builder, vtype, p, r, f(c))
    p = fmuladd(builder, vtype, p, builder.fmul(r, r), r)
    p = builder.fadd(p, f(1.0))
    ivec = ir.VectorType(itype, n)
    k = builder.sub(builder.bitcast(t, ivec), _iconst(itype, n, shift_bits))
    k1 = builder.ashr(k, _iconst(itype, n, 1))
    s1 = builder.shl(builder.add(k1, _iconst(itype, n, bias)), _iconst(itype, n, mant))
    s2 = builder.shl(builder.add(builder.sub(k, k1), _iconst(itype, n, bias)),
                     _iconst(itype, n, mant))
    result = builder.fmul(builder.fmul(p, builder.bitcast(s1, vtype)),
                          builder.bitcast(s2, vtype))
    return builder.select(tiny, f(0.0), result)


@intrinsic
def vexp_minus(typingctx, x, shift):
    """``exp(x - shift)`` lane by lane (``x`` a vector, ``shift`` a scalar of its dtype)."""
    if x not in _VECTOR.values() or shift != x.dtype:
        return None

    def codegen(context, builder, signature, args):
        value, s = args
        return _exp_ir(builder, builder.fsub(value, splat(builder, s, x.lanes)), x.dtype)

    return x(x, shift), codegen


@intrinsic
def vload_fill(typingctx, array, index, count, fill):
    """``array[index : index + count]`` in the first ``count`` lanes, ``fill`` after."""
    vector = _VECTOR[array.dtype]

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(vector)
        ptr = element_pointer(context, builder, signature.args[0], args[0], args[1])
        mask = lane_mask(builder, vector.lanes, args[2])
        loaded = masked_load(context, builder, vtype, ptr, mask, array.dtype)
        return builder.select(mask, loaded, splat(builder, args[3], vector.lanes))

    return vector(array, index, types.uint64, array.dtype), codegen


def _maxnum(builder, a, b):
    vtype = a.type
    suffix = f"v{vtype.count}{'f32' if isinstance(vtype.element, ir.FloatType) else 'f64'}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 2),
                                        f"llvm.maxnum.{suffix}")
    return builder.call(fn, [a, b])


@intrinsic
def vmaxnum(typingctx, a, b):
    """Lane-wise IEEE maxNum of two vectors."""
    if a not in _VECTOR.values() or a != b:
        return None

    def codegen(context, builder, signature, args):
        return _maxnum(builder, *args)

    return a(a, b), codegen


@intrinsic
def vmax_lanes(typingctx, v):
    """maxNum of the lanes of ``v``, halves compared pairwise (a fixed tree)."""
    if v not in _VECTOR.values():
        return None

    def codegen(context, builder, signature, args):
        return reduce_lanes(builder, args[0], v.lanes, _maxnum)

    return v.dtype(v), codegen
