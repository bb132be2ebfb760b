"""LLVM intrinsics that Numba does not expose: bit casts, fused multiply-add, maxnum.

:mod:`.vmath` builds powers of two (``2**n`` is the integer ``(n + bias) << mantissa_bits``
read as a float) and splits floats into exponent and mantissa.  NumPy's ``.view`` does
that for arrays but not for scalars inside a loop; an LLVM ``bitcast`` costs nothing and
keeps the loop vectorisable (``vpslld``/``vpaddd`` on the same ``zmm`` registers).

``float_from_bits(i)``: int32 -> float32, int64 -> float64 (other integer types are first
converted to the signed integer of the float's width by the caller).
``bits_from_float(x)``: float32 -> int32, float64 -> int64.
``fma(a, b, c)``: ``a * b + c`` with a single rounding (``llvm.fma``), for all-float32 or
all-float64 arguments.  :mod:`.vmath` uses it where the rounding error of a product must be
recovered exactly (``x*x - fl(x*x)``); the ``contract`` fastmath flag only *allows* LLVM
to fuse, and common-subexpression elimination would turn that difference into zero.
On a CPU without FMA instructions LLVM calls libm's correctly rounded ``fma`` instead.
``maxnum(a, b)``: IEEE ``maxNum`` (``llvm.maxnum``): the larger of ``a`` and ``b``, ignoring
a NaN operand.  A running maximum written with it vectorises without fast-math flags (the
reduction does not depend on the order of the elements); Python's ``max`` or a compare
and select does not.  Softmax uses it for its row maximum, where ignoring a NaN is
harmless: the NaN element itself still makes its ``exp`` and so the row sum NaN.
"""
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

__all__ = ["bits_from_float", "float_from_bits", "fma", "maxnum"]

_FLOAT_OF_INT = {types.int32: types.float32, types.int64: types.float64}
_INT_OF_FLOAT = {types.float32: types.int32, types.float64: types.int64}
_LLVM_FLOAT = {types.float32: ir.FloatType(), types.float64: ir.DoubleType()}


@intrinsic
def float_from_bits(typingctx, bits):
    """Reinterpret the bits of an int32 (int64) as a float32 (float64)."""
    result = _FLOAT_OF_INT.get(bits)
    if result is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _LLVM_FLOAT[result])

    return result(bits), codegen


@intrinsic
def bits_from_float(typingctx, value):
    """Reinterpret the bits of a float32 (float64) as an int32 (int64)."""
    result = _INT_OF_FLOAT.get(value)
    if result is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(result.bitwidth))

    return result(value), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (float32 or float64, all three of one type)."""
    if a not in _LLVM_FLOAT or not (a == b == c):
        return None
    llvm_type = _LLVM_FLOAT[a]

    def codegen(context, builder, signature, args):
        name = "llvm.fma.f32" if a == types.float32 else "llvm.fma.f64"
        fn_type = ir.FunctionType(llvm_type, [llvm_type] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fn_type, name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def maxnum(typingctx, a, b):
    """IEEE maxNum of two float32 (or two float64): the larger, ignoring one NaN operand."""
    if a not in _LLVM_FLOAT or a != b:
        return None
    llvm_type = _LLVM_FLOAT[a]

    def codegen(context, builder, signature, args):
        name = "llvm.maxnum.f32" if a == types.float32 else "llvm.maxnum.f64"
        fn_type = ir.FunctionType(llvm_type, [llvm_type] * 2)
        fn = cgutils.get_or_insert_function(builder.module, fn_type, name)
        return builder.call(fn, args)

    return a(a, b), codegen
