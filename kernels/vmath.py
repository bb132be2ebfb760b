"""Elementary functions that LLVM can vectorise: exp, expm1, log, log1p, tanh, erf, erfc and
the standard normal cdf/pdf, for float32 and float64 scalars.

Why: Numba lowers ``math.exp`` and friends to calls into libm, one element at a time (the
PyPI llvmlite has no SVML), so a loop that calls them is never vectorised and runs ~10x
slower than NumPy's SIMD ufuncs.  The functions here are plain arithmetic, integer bit
manipulation (:mod:`.simd_intrinsics`) and selects, which LLVM inlines into the calling
loop and turns into AVX-512/AVX2 code (16 float32 lanes per instruction).

Each function takes and returns one scalar of the caller's dtype; the float32/float64
implementations are chosen at compile time (``isinstance`` is resolved by Numba's type
inference, so each specialisation contains only its own branch).

Special values are handled by explicit selects, not by compiler assumptions: NaN in gives
NaN out, ``exp(-inf) = 0``, ``exp(+inf) = inf``, overflow gives ``inf`` and underflow
gives correctly rounded subnormals or 0, without floating-point warnings.  The only
fastmath flag used is ``contract`` (let LLVM fuse ``a*b + c`` into one FMA: one rounding
instead of two, so results can only get more accurate; it never changes NaN/Inf
behaviour).  Callers may compile with other flags: flags are attached to instructions, so
LLVM inlining a function here into a ``reassoc`` kernel does not give its instructions
that flag.  The exception: ``erf``, ``erfc`` and ``normal_cdf`` are inlined by Numba
(``inline="always"``; LLVM's cost model refused them and the calling loop stayed scalar),
so their own arithmetic takes the caller's flags; it relies on no rounding trick (the
``exp`` they call is a separate function and keeps its flags).

Accuracy, measured over dense sweeps (including the range edges, subnormal results,
±0, ±inf, NaN; see ``tests/test_vmath.py``) against float64/mpmath-accurate references,
in units in the last place (ulp) of the result's dtype:

==============  =======================================  ==================================
function        float32 (vectorised)                     float64
==============  =======================================  ==================================
exp             Cephes ``expf`` polynomial, <= 1 ulp     degree-13 Taylor polynomial on
                                                         ``|r| <= ln2/2``, <= 1 ulp
expm1           same polynomial, <= 1.4 ulp              same polynomial, <= 2 ulp
log, log1p      fdlibm ``logf`` polynomial, <= 0.75 ulp  fdlibm ``log`` polynomial, <= 1 ulp
tanh            rational fit, <= 4.4 ulp (4.7 w/o FMA)   from expm1, <= 3 ulp
erf, erfc       rational fit evaluated in float64,       libm (``math.erf``/``math.erfc``),
normal_cdf      then rounded: <= 0.51 ulp                not vectorised: <= 2 ulp;
                                                         normal_cdf <= 4 ulp
normal_pdf      float64 exp, then rounded: <= 0.5 ulp    split ``x*x`` + exp, <= 3.3 ulp
gaussian        split ``x*x`` + exp, <= 2.1 ulp          split ``x*x`` + exp, <= 2.1 ulp
==============  =======================================  ==================================

For float64, 4 ulp is a relative error below 1e-15.

(``tests/test_vmath.py`` asserts these bounds with a small margin.)  erf/erfc/normal_cdf
in float64 stay libm calls: a float64 approximation good to ~1e-15 everywhere needs
several intervals (fdlibm uses five), which in SIMD code means computing them all.
float64 ``normal_cdf(x) = erfc(-x/sqrt 2)/2`` corrects for the rounding of ``x/sqrt 2``
(to first order), which would otherwise cost ``x**2/2`` ulps in the far left tail.

Range reduction for exp/expm1 (Cody & Waite): ``x = n ln2 + r`` with ``n = round(x/ln2)``
found by adding ``1.5 * 2**mantissa_bits`` (the sum's low mantissa bits hold ``n``, read by
a bit cast, so no float->int conversion of a possibly-NaN value is needed) and ``ln2``
split into a short high part and a low part so ``n * ln2_hi`` is exact.  ``2**n`` is built
from its bits; exp scales in two steps ``2**(n//2) * 2**(n - n//2)`` so that results that
overflow become inf and results in the subnormal range are rounded once, correctly.
"""
import math

import numpy as np

from ._jit import kernel
from .simd_intrinsics import bits_from_float, float_from_bits, fma

__all__ = ["exp", "expm1", "log", "log1p", "tanh", "erf", "erfc", "normal_cdf", "normal_pdf",
           "gaussian", "like"]

# See the module docstring: FMA contraction only; NaN/Inf are handled explicitly.
_FLAGS = {"contract"}

_F32 = np.float32
_I32 = np.int32
_I64 = np.int64

# --------------------------------------------------------------------------- constants
# exp, float32 (Cephes expf: the polynomial's relative error is below 2**-24 on |r| <= ln2/2)
_LOG2E_32 = _F32(1.4426950408889634)
_SHIFT_32 = _F32(12582912.0)                 # 1.5 * 2**23
_SHIFT_BITS_32 = _I32(0x4B400000)            # its bits: t's bits minus these are n
_LN2_HI_32 = _F32(0.693359375)               # 11 significant bits: n * _LN2_HI_32 is exact
_LN2_LO_32 = _F32(-2.12194440e-4)            # ln 2 - _LN2_HI_32
_EXP_HI_32 = _F32(88.8)      # exp(88.8) overflows: clamping here still gives inf
_EXP_LO_32 = _F32(-104.0)    # exp(-104) < half the smallest subnormal: rounds to 0
_EXPM1_LO_32 = _F32(-18.0)   # expm1(x) rounds to -1 below -17.33
_P2_32 = _F32(5.0000001201e-1)
_P3_32 = _F32(1.6666665459e-1)
_P4_32 = _F32(4.1665795894e-2)
_P5_32 = _F32(8.3334519073e-3)
_P6_32 = _F32(1.3981999507e-3)
_P7_32 = _F32(1.9875691500e-4)
_BIAS_32 = _I32(127)
_MANT_32 = 23
_TINY_EXPM1_32 = _F32(2.0 ** -25)   # |x| below: expm1(x) = x (also keeps the sign of -0)
# tanh, float32: tanh(x) ~ x P(x**2) / Q(x**2) on [0, 9], a rational fit (iteratively
# reweighted least squares for the minimax relative error: 2.1e-8 = 0.35 ulp, coefficients
# rounded to float32).  The rounding of the two Horner sums brings the float32 result to
# <= 4.5 ulp.  float32 tanh(x) rounds to ±1 beyond ±9.011; x is clamped at ±9.5, where the
# rational (growing slowly past its fit interval) is above 1 and so clamped to exactly 1.
_TANH_P = (_F32(1.0), _F32(0.13381034135818481), _F32(0.0034955984447151423),
           _F32(2.0609239072655328e-05), _F32(1.3354858552361293e-08))
_TANH_Q = (_F32(1.0), _F32(0.4671435058116913), _F32(0.02587702125310898),
           _F32(0.0003285651037003845), _F32(7.776643542456441e-07))
_TANH_X_MAX_32 = _F32(9.5)

# exp, float64: Taylor coefficients 1/k! (the remainder r**14/14! < 2**-57 on |r| <= ln2/2)
_LOG2E_64 = 1.4426950408889634
_SHIFT_64 = 6755399441055744.0               # 1.5 * 2**52
_SHIFT_BITS_64 = _I64(0x4338000000000000)
_LN2_HI_64 = 6.93147180369123816490e-01      # fdlibm: 32 trailing zero bits
_LN2_LO_64 = 1.90821492927058770002e-10
_EXP_HI_64 = 709.9
_EXP_LO_64 = -746.0
_EXPM1_LO_64 = -40.0
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(14))
_BIAS_64 = _I64(1023)
_MANT_64 = 52
_TINY_EXPM1_64 = 2.0 ** -54
_TINY_TANH_64 = 2.0 ** -27

# log, float32 (fdlibm/musl logf: log(1+f) = f - f**2/2 + s*(f**2/2 + R(s**2)), s = f/(2+f))
_LG1_32 = _F32(float.fromhex("0xaaaaaa.0p-24"))
_LG2_32 = _F32(float.fromhex("0xccce13.0p-25"))
_LG3_32 = _F32(float.fromhex("0x91e9ee.0p-25"))
_LG4_32 = _F32(float.fromhex("0xf89e26.0p-26"))
_LOG_LN2_HI_32 = _F32(6.9313812256e-01)      # 0x3f317180
_LOG_LN2_LO_32 = _F32(9.0580006145e-06)      # 0x3717f7d1
_SQRT2_OFFSET_32 = _I32(0x3F800000 - 0x3F3504F3)   # moves the mantissa split to sqrt(2)
_SQRT2_HALF_BITS_32 = _I32(0x3F3504F3)
_MANT_MASK_32 = _I32(0x007FFFFF)
_MIN_NORMAL_32 = _F32(2.0 ** -126)
_TINY_LOG1P_32 = _F32(2.0 ** -24)

# log, float64 (fdlibm e_log.c)
_LG1_64 = 6.666666666666735130e-01
_LG2_64 = 3.999999999940941908e-01
_LG3_64 = 2.857142874366239149e-01
_LG4_64 = 2.222219843214978396e-01
_LG5_64 = 1.818357216161805012e-01
_LG6_64 = 1.531383769920937332e-01
_LG7_64 = 1.479819860511658591e-01
_SQRT2_OFFSET_64 = _I64(0x3FF0000000000000 - 0x3FE6A09E00000000)
_SQRT2_HALF_BITS_64 = _I64(0x3FE6A09E00000000)
_MANT_MASK_64 = _I64(0x000FFFFFFFFFFFFF)
_MIN_NORMAL_64 = 2.0 ** -1022
_TINY_LOG1P_64 = 2.0 ** -54

# erfc for float32 arguments, evaluated in float64: erfc(z) = exp(-z*z) * P(z) / Q(z) for
# z >= 0, a rational fit of erfcx(z) = exp(z*z) erfc(z) on [0, 10.2] (iteratively reweighted
# least squares for the minimax relative error; max relative error 8e-11 = 0.001 float32
# ulp).  Beyond z = 10.06 erfc underflows in float32, so z is clamped at 11.
_ERFC_P = (0.9999999999189126, 1.4342586100698345, 1.0006875538567128,
           0.40242406918932677, 0.09284042623608588, 0.010018833304554553)
_ERFC_Q = (1.0, 2.562637766155619, 2.892314862265132, 1.8556648668921611,
           0.7221798128985285, 0.1645542904036802, 0.01775794253394064)
_ERFC_Z_MAX = 11.0
# erf(x) for |x| < 1/2, float64: Maclaurin series 2/sqrt(pi) * sum (-1)^k x^(2k+1)/(k!(2k+1)),
# k <= 7 (remainder < 2e-11 relative).
_ERF_S = tuple(2.0 / math.sqrt(math.pi) * (-1.0) ** k / (math.factorial(k) * (2 * k + 1))
               for k in range(8))
_ERF_SMALL = 0.5
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT2_LO = -4.833646656726457e-17     # 1/sqrt(2) - _INV_SQRT2
_TWO_OVER_SQRT_PI = 1.1283791670955126
_INV_SQRT_2PI = 0.3989422804014327
_GAUSS_X_MAX_32 = _F32(11.0)     # exp(-x*x) is 0 in float32 beyond |x| = 10.2
_GAUSS_X_MAX_64 = 40.0           # ... and in float64 beyond |x| = 27.3


# --------------------------------------------------------------------------- helpers
@kernel
def like(v, c):
    """The constant ``c`` in the type of the scalar ``v``, so float32 code stays float32
    (a Python float is a float64 in Numba; LLVM folds the conversion)."""
    if isinstance(v, np.float32):
        return np.float32(c)
    return np.float64(c)


# --------------------------------------------------------------------------- exp, expm1
@kernel(fastmath=_FLAGS)
def exp(x):
    """``e**x``; overflow gives inf, underflow correctly rounded subnormals and then 0."""
    if isinstance(x, np.float32):
        xc = _EXP_HI_32 if x > _EXP_HI_32 else x      # NaN passes both clamps unchanged
        xc = _EXP_LO_32 if xc < _EXP_LO_32 else xc
        t = xc * _LOG2E_32 + _SHIFT_32
        nf = t - _SHIFT_32                             # round(x / ln 2)
        r = xc - nf * _LN2_HI_32 - nf * _LN2_LO_32
        p = ((((_P7_32 * r + _P6_32) * r + _P5_32) * r + _P4_32) * r + _P3_32) * r + _P2_32
        p = p * (r * r) + r + _F32(1.0)
        n = _I32(bits_from_float(t) - _SHIFT_BITS_32)  # in [-150, 128]
        n1 = _I32(n >> 1)
        s1 = float_from_bits(_I32((n1 + _BIAS_32) << _MANT_32))
        s2 = float_from_bits(_I32((n - n1 + _BIAS_32) << _MANT_32))
        return p * s1 * s2
    else:
        xc = _EXP_HI_64 if x > _EXP_HI_64 else x
        xc = _EXP_LO_64 if xc < _EXP_LO_64 else xc
        t = xc * _LOG2E_64 + _SHIFT_64
        nf = t - _SHIFT_64
        r = xc - nf * _LN2_HI_64 - nf * _LN2_LO_64
        p = _expm1_poly64(r) + 1.0
        n = _I64(bits_from_float(t) - _SHIFT_BITS_64)  # in [-1076, 1024]
        n1 = _I64(n >> 1)
        s1 = float_from_bits(_I64((n1 + _BIAS_64) << _MANT_64))
        s2 = float_from_bits(_I64((n - n1 + _BIAS_64) << _MANT_64))
        return p * s1 * s2


@kernel(fastmath=_FLAGS)
def _expm1_poly64(r):
    """``e**r - 1`` for ``|r| <= ln2/2`` (float64), Taylor series to degree 13."""
    c = _INV_FACT
    p = c[13]
    p = p * r + c[12]
    p = p * r + c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    return p * (r * r) + r


@kernel(fastmath=_FLAGS)
def expm1(x):
    """``e**x - 1``, accurate near 0 (no cancellation): ELU and tanh use it.

    With ``x = n ln2 + r``: ``expm1(x) = 2 (2**(n-1) expm1(r) + (2**(n-1) - 1/2))``; the
    bracket is one FMA whose addend is exact, and ``2**(n-1)`` stays finite up to n = 128.
    """
    if isinstance(x, np.float32):
        xc = _EXP_HI_32 if x > _EXP_HI_32 else x
        xc = _EXPM1_LO_32 if xc < _EXPM1_LO_32 else xc
        t = xc * _LOG2E_32 + _SHIFT_32
        nf = t - _SHIFT_32
        r = xc - nf * _LN2_HI_32 - nf * _LN2_LO_32
        p = ((((_P7_32 * r + _P6_32) * r + _P5_32) * r + _P4_32) * r + _P3_32) * r + _P2_32
        em1 = p * (r * r) + r
        n = _I32(bits_from_float(t) - _SHIFT_BITS_32)   # in [-26, 128]
        s = float_from_bits(_I32((n + (_BIAS_32 - 1)) << _MANT_32))
        y = s * em1 + (s - _F32(0.5))
        y = y + y
        return x if abs(x) < _TINY_EXPM1_32 else y
    else:
        xc = _EXP_HI_64 if x > _EXP_HI_64 else x
        xc = _EXPM1_LO_64 if xc < _EXPM1_LO_64 else xc
        t = xc * _LOG2E_64 + _SHIFT_64
        nf = t - _SHIFT_64
        r = xc - nf * _LN2_HI_64 - nf * _LN2_LO_64
        em1 = _expm1_poly64(r)
        n = _I64(bits_from_float(t) - _SHIFT_BITS_64)
        s = float_from_bits(_I64((n + (_BIAS_64 - 1)) << _MANT_64))
        y = s * em1 + (s - 0.5)
        y = y + y
        return x if abs(x) < _TINY_EXPM1_64 else y


@kernel(fastmath=_FLAGS)
def tanh(x):
    """Hyperbolic tangent, exactly ±1 for large ``|x|`` and at ±inf.

    float32: ``x P(x**2) / Q(x**2)`` on ``x`` clamped to ±9.5 (a rational fit, see
    ``_TANH_P``): 4 FMAs per polynomial and one division, 2x faster than going through
    expm1, <= 4.5 ulp.  (Where tanh nears ±1 those ulps are ~5e-7 absolute in the
    ``1 - y**2`` of the backward pass; the more accurate ``2t/(1 + t**2)`` with
    ``t = tanh(x/2)`` needs a second division and runs at half the speed.)
    float64: ``-t / (t + 2)`` with ``t = expm1(-2|x|)`` and the sign of ``x`` (no
    cancellation near 0), <= 3 ulp.
    """
    if isinstance(x, np.float32):
        xc = _TANH_X_MAX_32 if x > _TANH_X_MAX_32 else x      # NaN passes both clamps
        xc = -_TANH_X_MAX_32 if xc < -_TANH_X_MAX_32 else xc
        u = xc * xc
        p = _TANH_P
        q = _TANH_Q
        num = (((p[4] * u + p[3]) * u + p[2]) * u + p[1]) * u + p[0]
        den = (((q[4] * u + q[3]) * u + q[2]) * u + q[1]) * u + q[0]
        y = xc * num / den                                     # keeps the sign of -0
        one = _F32(1.0)
        y = one if y > one else y          # at the clamp the rational exceeds 1 by 6 ulp,
        return -one if y < -one else y     # so large |x| and ±inf give exactly ±1
    else:
        a = abs(x)
        t = expm1(-(a + a))
        y = -t / (t + 2.0)
        y = -y if x < 0.0 else y
        return x if a < _TINY_TANH_64 else y


# --------------------------------------------------------------------------- log, log1p
@kernel(fastmath=_FLAGS)
def _log_tail(f):
    """For ``f = m - 1``, ``m`` in ``[sqrt(2)/2, sqrt(2))``: ``(s*(hfsq + R), hfsq)`` with
    ``log(1+f) = f - hfsq + s*(hfsq + R)`` (fdlibm's split, which keeps ``f`` exact)."""
    if isinstance(f, np.float32):
        s = f / (_F32(2.0) + f)
        z = s * s
        w = z * z
        r = z * (_LG1_32 + w * _LG3_32) + w * (_LG2_32 + w * _LG4_32)
        hfsq = _F32(0.5) * f * f
    else:
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        r = (z * (_LG1_64 + w * (_LG3_64 + w * (_LG5_64 + w * _LG7_64)))
             + w * (_LG2_64 + w * (_LG4_64 + w * _LG6_64)))
        hfsq = 0.5 * f * f
    return s * (hfsq + r), hfsq


@kernel(fastmath=_FLAGS)
def log(x):
    """Natural logarithm: ``log(0) = -inf``, ``log(x < 0) = NaN``, ``log(inf) = inf``;
    subnormal ``x`` are scaled up first."""
    if isinstance(x, np.float32):
        sub = x < _MIN_NORMAL_32
        xs = x * _F32(33554432.0) if sub else x        # 2**25
        k0 = _I32(-25) if sub else _I32(0)
        ix = _I32(bits_from_float(xs) + _SQRT2_OFFSET_32)
        k = _I32((ix >> _MANT_32) - _BIAS_32 + k0)
        f = float_from_bits(_I32((ix & _MANT_MASK_32) + _SQRT2_HALF_BITS_32)) - _F32(1.0)
        tail, hfsq = _log_tail(f)
        dk = _F32(k)
        y = tail + dk * _LOG_LN2_LO_32 - hfsq + f + dk * _LOG_LN2_HI_32
        y = x if not x < _F32(np.inf) else y          # inf, NaN
        y = _F32(np.nan) if x < _F32(0.0) else y
        return _F32(-np.inf) if x == _F32(0.0) else y
    else:
        sub = x < _MIN_NORMAL_64
        xs = x * 18014398509481984.0 if sub else x     # 2**54
        k0 = _I64(-54) if sub else _I64(0)
        ix = _I64(bits_from_float(xs) + _SQRT2_OFFSET_64)
        k = _I64((ix >> _MANT_64) - _BIAS_64 + k0)
        f = float_from_bits(_I64((ix & _MANT_MASK_64) + _SQRT2_HALF_BITS_64)) - 1.0
        tail, hfsq = _log_tail(f)
        dk = np.float64(k)
        y = tail + dk * _LN2_LO_64 - hfsq + f + dk * _LN2_HI_64
        y = x if not x < np.inf else y
        y = np.nan if x < 0.0 else y
        return -np.inf if x == 0.0 else y


@kernel(fastmath=_FLAGS)
def log1p(x):
    """``log(1 + x)``, accurate for small ``x``: ``u = 1 + x`` is reduced like ``log(u)``
    and the rounding error of the sum, ``c/u``, is added back (fdlibm/musl ``log1p``)."""
    if isinstance(x, np.float32):
        one = _F32(1.0)
        u = one + x
        iu = _I32(bits_from_float(u) + _SQRT2_OFFSET_32)
        k = _I32((iu >> _MANT_32) - _BIAS_32)
        c = (one - (u - x)) if k >= 2 else (x - (u - one))
        c = c / u
        f = float_from_bits(_I32((iu & _MANT_MASK_32) + _SQRT2_HALF_BITS_32)) - one
        tail, hfsq = _log_tail(f)
        dk = _F32(k)
        y = tail + (dk * _LOG_LN2_LO_32 + c) - hfsq + f + dk * _LOG_LN2_HI_32
        y = x if not x < _F32(np.inf) else y           # inf, NaN
        y = _F32(np.nan) if x < -one else y
        y = _F32(-np.inf) if x == -one else y
        return x if abs(x) < _TINY_LOG1P_32 else y
    else:
        u = 1.0 + x
        iu = _I64(bits_from_float(u) + _SQRT2_OFFSET_64)
        k = _I64((iu >> _MANT_64) - _BIAS_64)
        c = (1.0 - (u - x)) if k >= 2 else (x - (u - 1.0))
        c = c / u
        f = float_from_bits(_I64((iu & _MANT_MASK_64) + _SQRT2_HALF_BITS_64)) - 1.0
        tail, hfsq = _log_tail(f)
        dk = np.float64(k)
        y = tail + (dk * _LN2_LO_64 + c) - hfsq + f + dk * _LN2_HI_64
        y = x if not x < np.inf else y
        y = np.nan if x < -1.0 else y
        y = -np.inf if x == -1.0 else y
        return x if abs(x) < _TINY_LOG1P_64 else y


# --------------------------------------------------------------------------- erf, erfc, normal
@kernel(fastmath=_FLAGS)
def _erfcx_f64(z):
    """``exp(z*z) erfc(z)`` for ``0 <= z`` (float64, relative error 8e-11; for float32
    results), rational fit, ``z`` clamped at 11 (NaN passes)."""
    zc = _ERFC_Z_MAX if z > _ERFC_Z_MAX else z
    p = _ERFC_P
    q = _ERFC_Q
    num = ((((p[5] * zc + p[4]) * zc + p[3]) * zc + p[2]) * zc + p[1]) * zc + p[0]
    den = (((((q[6] * zc + q[5]) * zc + q[4]) * zc + q[3]) * zc + q[2]) * zc + q[1]) * zc + q[0]
    return num / den


@kernel(fastmath=_FLAGS, inline="always")
def erfc(x):
    """Complementary error function ``1 - erf(x)``, accurate in both tails."""
    if isinstance(x, np.float32):
        xd = np.float64(x)
        r = _erfcx_f64(abs(xd)) * exp(-(xd * xd))      # xd*xd is exact for a float32 xd
        return _F32(2.0 - r if xd < 0.0 else r)
    else:
        return math.erfc(x)


@kernel(fastmath=_FLAGS, inline="always")
def erf(x):
    """Error function; a series for ``|x| < 1/2``, ``1 - erfc(|x|)`` beyond."""
    if isinstance(x, np.float32):
        xd = np.float64(x)
        x2 = xd * xd
        s = _ERF_S
        small = xd * (((((((s[7] * x2 + s[6]) * x2 + s[5]) * x2 + s[4]) * x2 + s[3]) * x2
                         + s[2]) * x2 + s[1]) * x2 + s[0])
        big = 1.0 - _erfcx_f64(abs(xd)) * exp(-x2)
        big = -big if xd < 0.0 else big
        return _F32(small if abs(xd) < _ERF_SMALL else big)
    else:
        return math.erf(x)


@kernel(fastmath=_FLAGS, inline="always")
def normal_cdf(x):
    """Standard normal cdf ``Phi(x) = erfc(-x/sqrt 2) / 2`` (GELU uses ``x * Phi(x)``)."""
    if isinstance(x, np.float32):
        xd = np.float64(x)
        r = 0.5 * _erfcx_f64(abs(xd) * _INV_SQRT2) * exp(-0.5 * (xd * xd))
        return _F32(r if xd < 0.0 else 1.0 - r)
    else:
        # z = -x/sqrt(2) = zh + zl exactly (to 2**-106); erfc(zh + zl) = erfc(zh) - zl *
        # erfc'(zh): without the correction the rounding of zh costs z*z ulps in the tail.
        zh = -x * _INV_SQRT2
        zl = fma(-x, _INV_SQRT2, -zh) - x * _INV_SQRT2_LO
        zl = zl if abs(x) < 1e300 else 0.0             # inf - inf would be NaN
        return 0.5 * (math.erfc(zh) - zl * _TWO_OVER_SQRT_PI * math.exp(-zh * zh))


@kernel(fastmath=_FLAGS)
def _exp_neg_sq(x, half):
    """``exp(-x*x)`` (or ``exp(-x*x/2)`` with ``half``) with ``x*x = hi + lo`` split exactly
    by an FMA: ``exp(-hi) * (1 - lo)``; rounding ``x*x`` first would cost a relative error
    of ``x*x`` ulps."""
    a = abs(x)
    if isinstance(x, np.float32):
        a = _GAUSS_X_MAX_32 if a > _GAUSS_X_MAX_32 else a     # NaN passes
        hi = a * a
        lo = fma(a, a, -hi)
        if half:
            hi = hi * _F32(0.5)
            lo = lo * _F32(0.5)
        return exp(-hi) * (_F32(1.0) - lo)
    else:
        a = _GAUSS_X_MAX_64 if a > _GAUSS_X_MAX_64 else a
        hi = a * a
        lo = fma(a, a, -hi)
        if half:
            hi = hi * 0.5
            lo = lo * 0.5
        return exp(-hi) * (1.0 - lo)


@kernel(fastmath=_FLAGS)
def gaussian(x):
    """``exp(-x**2)`` (the gaussian activation)."""
    return _exp_neg_sq(x, False)


@kernel(fastmath=_FLAGS)
def normal_pdf(x):
    """Standard normal density ``exp(-x**2/2) / sqrt(2 pi)``."""
    if isinstance(x, np.float32):
        xd = np.float64(x)
        return _F32(exp(-0.5 * (xd * xd)) * _INV_SQRT_2PI)   # exact square in float64
    else:
        return _exp_neg_sq(x, True) * _INV_SQRT_2PI
