"""One record per activation: everything fastnn needs to know about it, formulas included.

:data:`SPECS` is the only list of activations, and each record is the only place its
activation is written down.  Everything else is derived from the records:

* the layers (names, parameters, their constraints, whether a gradient flows);
* the CPU kernels (:mod:`.act_elementwise`: ``name_forward`` / ``name_backward``; the GEMM
  epilogue :mod:`.epilogue`; the fused dense backward :mod:`.dense`), compiled by Numba
  from the scalar formulas below;
* the CUDA kernels (:mod:`.cuda.activations`, :mod:`.cuda.dense`), compiled by
  ``numba.cuda`` from *the same formula functions*, re-bound to CUDA primitives;
* the NumPy reference backend (``fastnn/backends/numpy_ops.py``) from the NumPy references
  below, which the tests compare the kernels against;
* the tables :data:`ACTIVATIONS`, :data:`EPILOGUE_CODES`, :data:`FROM_OUTPUT`,
  :data:`NOT_DIFFERENTIABLE`, :data:`ROW_WISE`, and the tests and benchmarks that
  iterate over them.

Adding an element-wise activation therefore touches this file (its formulas, NumPy
references and record), its tests (the parametrised tests pick it up; add what is
special about it) and the README's table.  ``tests/test_activation_registry.py`` proves
it: it adds an activation to a copy of the package by editing this file alone and
checks that it works everywhere.

Writing a formula (``f(v, p0, p1)``, ``d * f'(x)`` as ``(d, x, y, p0, p1)`` with
``y = f(x)``, and, when ``f'`` follows from ``y`` alone, ``(d, y, p0, p1)``):

* scalars in, a scalar of the same dtype out; ``p0, p1`` are the parameters in the
  record's order, already of the array dtype (unused ones are 0);
* only arithmetic, comparisons, conditional expressions, ``abs`` and the primitives of
  :data:`PRIMITIVES` (on the CPU the :mod:`.vmath` functions, which LLVM vectorises; on
  the GPU CUDA's libdevice through :mod:`.cuda.activations`); constants as
  ``like(v, c)`` (a Python float is a float64 and would upcast float32 code);
* no calls to other formulas, no globals but the primitives (a test checks both).

This module imports only :mod:`.vmath` (for the CPU primitives), so every kernel module
can import it.
"""
import dis
import math
from dataclasses import dataclass, field

import numpy as np

from .vmath import exp, expm1, gaussian, like, log1p, normal_cdf, normal_pdf, tanh

__all__ = ["ActivationSpec", "SPECS", "BY_NAME", "ACTIVATIONS", "EPILOGUE_CODES",
           "FROM_OUTPUT", "NOT_DIFFERENTIABLE", "ROW_WISE", "PRIMITIVES", "ELEMENTWISE",
           "check_params", "reads"]

#: The functions a formula may call (besides ``abs``); every target provides each.
PRIMITIVES = ("exp", "expm1", "log1p", "tanh", "normal_cdf", "normal_pdf", "gaussian",
              "like")


@dataclass(frozen=True)
class ActivationSpec:
    """One activation.

    ``params``: ``(name, default)`` pairs in the order the kernels take them.
    ``constraints``: conditions on the parameters, each ``(left, op, right)`` with ``op``
    one of ``">=", ">", "<"`` and ``right`` a number or another parameter's name.
    ``code``: the integer the compiled kernels switch on (stable: ``0 .. n-1``); ``None``
    for an activation that is not element-wise (softmax).
    ``forward``, ``backward``, ``grad_from_output``: the scalar formulas (see the module
    docstring); ``grad_from_output`` is ``None`` when ``f'`` does not follow from the
    output alone, else the fused dense backward uses it (and needs no ``z``), under
    ``from_output_if`` conditions (leaky ReLU: only for ``alpha >= 0``, where ``y > 0``
    tells ``z > 0``).
    ``transcendental``: ``(forward, backward)``: whether each formula is built on
    exp/log/erf/tanh (compute-bound: the kernels use the second core sooner).
    ``reference_forward(x, out, *params)``, ``reference_backward(dy, x, y, out,
    *params)``: the NumPy reference; ``reference_grad_from_output(y, params)``: ``f'`` from
    the output, as an array.
    ``differentiable``: ``False`` when the derivative is zero almost everywhere (step).
    ``row_wise``: acts on whole rows (softmax).
    """
    name: str
    params: tuple = ()
    constraints: tuple = ()
    code: int = None
    forward: object = field(default=None, compare=False, repr=False)
    backward: object = field(default=None, compare=False, repr=False)
    grad_from_output: object = field(default=None, compare=False, repr=False)
    from_output_if: tuple = ()
    transcendental: tuple = (False, False)
    reference_forward: object = field(default=None, compare=False, repr=False)
    reference_backward: object = field(default=None, compare=False, repr=False)
    reference_grad_from_output: object = field(default=None, compare=False, repr=False)
    differentiable: bool = True
    row_wise: bool = False
    doc: str = field(default="", compare=False)

    @property
    def defaults(self):
        """``{parameter: default}`` in kernel order."""
        return dict(self.params)

    @property
    def from_output(self):
        """True if the derivative can (under ``from_output_if``) come from the output."""
        return self.grad_from_output is not None

    def derivative_from_output(self, params):
        """True if ``f'(z)`` follows from ``y`` for these parameter values."""
        return self.from_output and _holds(self.from_output_if, params)


_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def _holds(conditions, params):
    for left, op, right in conditions:
        value = params[right] if isinstance(right, str) else right
        if not _OPS[op](params[left], value):
            return False
    return True


def check_params(spec, params):
    """Raise ``ValueError`` naming the first constraint of ``spec`` that ``params`` break."""
    for left, op, right in spec.constraints:
        if not _holds(((left, op, right),), params):
            value = params[right] if isinstance(right, str) else right
            raise ValueError(f"{spec.name} needs {left} {op} {right}, got {left}="
                             f"{params[left]}" + (f", {right}={value}"
                                                  if isinstance(right, str) else ""))


def reads(formula, argument):
    """True if ``formula`` reads its parameter ``argument`` (the kernels skip loading the
    arrays a derivative does not need)."""
    return any(ins.opname.startswith("LOAD_FAST") and ins.argval == argument
               for ins in dis.get_instructions(formula))


def _cast(value, array):
    return array.dtype.type(value)


# NumPy has no erf; math.erf is exact to double precision, which a reference needs.
_erf = np.vectorize(math.erf, otypes=[np.float64])


# =========================================================================== the formulas
# Each activation: its scalar formulas (compiled for the CPU and the GPU), its NumPy
# reference, then its record.  NaN in gives NaN out except for the step (a 0/1 mask).

# --------------------------------------------------------------------------- identity
def _identity(v, p0, p1):
    return v


def _identity_grad(d, x, y, p0, p1):
    return d


def _identity_grad_y(d, y, p0, p1):
    return d


def _identity_ref(x, out):
    out[...] = x
    return out


def _identity_ref_grad(dy, x, y, out):
    out[...] = dy
    return out


IDENTITY = ActivationSpec(
    "identity", code=0, forward=_identity, backward=_identity_grad,
    grad_from_output=_identity_grad_y, reference_forward=_identity_ref,
    reference_backward=_identity_ref_grad,
    reference_grad_from_output=lambda y, p: np.ones_like(y), doc="f(x) = x")


# --------------------------------------------------------------------------- sigmoid
def _sigmoid(v, beta, p1):
    """``1/(1+e)`` for ``z >= 0`` and ``e/(1+e)`` otherwise, ``z = beta v``, with
    ``e = exp(-|z|) <= 1``: never overflows, exactly 1 or 0 at ±large ``z`` and ±inf."""
    one = like(v, 1.0)
    z = beta * v
    e = exp(-abs(z))
    return (one if z >= like(v, 0.0) else e) / (one + e)


def _sigmoid_grad(d, x, y, beta, p1):
    return d * beta * y * (like(y, 1.0) - y)


def _sigmoid_grad_y(d, y, beta, p1):
    return d * beta * y * (like(y, 1.0) - y)


def _sigmoid_ref(x, out, beta):
    z = _cast(beta, x) * x
    e = np.exp(-np.abs(z))
    out[...] = np.where(z >= 0, 1, e) / (1 + e)
    return out


def _sigmoid_ref_grad(dy, x, y, out, beta):
    out[...] = dy * _cast(beta, y) * y * (1 - y)
    return out


SIGMOID = ActivationSpec(
    "sigmoid", params=(("beta", 1.0),), code=4, forward=_sigmoid, backward=_sigmoid_grad,
    grad_from_output=_sigmoid_grad_y, transcendental=(True, False),
    reference_forward=_sigmoid_ref, reference_backward=_sigmoid_ref_grad,
    reference_grad_from_output=lambda y, p: p[0] * y * (1 - y),
    doc="f(x) = 1 / (1 + exp(-beta x))")


# --------------------------------------------------------------------------- tanh
def _tanh(v, p0, p1):
    return tanh(v)


def _tanh_grad(d, x, y, p0, p1):
    return d * (like(y, 1.0) - y * y)


def _tanh_grad_y(d, y, p0, p1):
    return d * (like(y, 1.0) - y * y)


def _tanh_ref(x, out):
    np.tanh(x, out=out)
    return out


def _tanh_ref_grad(dy, x, y, out):
    out[...] = dy * (1 - y * y)
    return out


TANH = ActivationSpec(
    "tanh", code=5, forward=_tanh, backward=_tanh_grad, grad_from_output=_tanh_grad_y,
    transcendental=(True, False), reference_forward=_tanh_ref,
    reference_backward=_tanh_ref_grad, reference_grad_from_output=lambda y, p: 1 - y * y,
    doc="f(x) = tanh(x)")


# --------------------------------------------------------------------------- ReLU family
def _relu(v, p0, p1):
    zero = like(v, 0.0)
    return zero if v < zero else v              # NaN is not < 0: it passes through


def _relu_grad(d, x, y, p0, p1):
    zero = like(d, 0.0)
    return d if x > zero else zero              # the derivative at 0 is 0, as in PyTorch


def _relu_grad_y(d, y, p0, p1):
    zero = like(d, 0.0)
    return d if y > zero else zero              # y > 0 exactly where z > 0


def _relu_ref(x, out):
    np.maximum(x, 0, out=out)
    return out


def _relu_ref_grad(dy, x, y, out):
    out[...] = np.where(x > 0, dy, 0)
    return out


RELU = ActivationSpec(
    "relu", code=1, forward=_relu, backward=_relu_grad, grad_from_output=_relu_grad_y,
    reference_forward=_relu_ref, reference_backward=_relu_ref_grad,
    reference_grad_from_output=lambda y, p: (y > 0).astype(y.dtype), doc="f(x) = max(x, 0)")


def _leaky_relu(v, alpha, p1):
    return v if v > like(v, 0.0) else alpha * v


def _leaky_relu_grad(d, x, y, alpha, p1):
    return d if x > like(x, 0.0) else alpha * d


def _leaky_relu_grad_y(d, y, alpha, p1):
    return d if y > like(y, 0.0) else alpha * d     # (needs alpha >= 0)


def _leaky_relu_ref(x, out, alpha):
    out[...] = np.where(x > 0, x, _cast(alpha, x) * x)
    return out


def _leaky_relu_ref_grad(dy, x, y, out, alpha):
    out[...] = np.where(x > 0, dy, _cast(alpha, x) * dy)
    return out


LEAKY_RELU = ActivationSpec(
    "leaky_relu", params=(("alpha", 0.01),), code=2, forward=_leaky_relu,
    backward=_leaky_relu_grad, grad_from_output=_leaky_relu_grad_y,
    from_output_if=(("alpha", ">=", 0.0),), reference_forward=_leaky_relu_ref,
    reference_backward=_leaky_relu_ref_grad,
    reference_grad_from_output=lambda y, p: np.where(y > 0, 1, p[0]).astype(y.dtype),
    doc="f(x) = x for x > 0, else alpha x")


def _elu(v, alpha, p1):
    zero = like(v, 0.0)
    # expm1 of a non-positive number (or NaN): accurate near 0, never overflows.
    return v if v > zero else alpha * expm1(zero if v > zero else v)


def _elu_grad(d, x, y, alpha, p1):
    return d if x > like(x, 0.0) else d * (y + alpha)     # y + alpha = alpha exp(x)


def _elu_grad_y(d, y, alpha, p1):
    return d if y > like(y, 0.0) else d * (y + alpha)


def _elu_ref(x, out, alpha):
    out[...] = np.where(x > 0, x, _cast(alpha, x) * np.expm1(np.minimum(x, 0)))
    return out


def _elu_ref_grad(dy, x, y, out, alpha):
    out[...] = np.where(x > 0, dy, dy * (y + _cast(alpha, x)))
    return out


ELU = ActivationSpec(
    "elu", params=(("alpha", 1.0),), constraints=(("alpha", ">=", 0.0),), code=3,
    forward=_elu, backward=_elu_grad, grad_from_output=_elu_grad_y,
    transcendental=(True, False), reference_forward=_elu_ref,
    reference_backward=_elu_ref_grad,
    reference_grad_from_output=lambda y, p: np.where(y > 0, 1, y + p[0]).astype(y.dtype),
    doc="f(x) = x for x > 0, else alpha (exp(x) - 1)")


# --------------------------------------------------------------------------- smooth ReLUs
def _softplus(v, p0, p1):
    zero = like(v, 0.0)
    return (v if v > zero else zero) + log1p(exp(-abs(v)))


def _softplus_grad(d, x, y, p0, p1):
    one = like(x, 1.0)
    e = exp(-abs(x))                              # d * sigmoid(x), never overflowing
    return d * ((one if x >= like(x, 0.0) else e) / (one + e))


def _softplus_grad_y(d, y, p0, p1):
    return -d * expm1(-y)                         # sigmoid(z) = 1 - exp(-softplus(z))


def _softplus_ref(x, out):
    out[...] = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return out


def _softplus_ref_grad(dy, x, y, out):
    e = np.exp(-np.abs(x))
    out[...] = dy * np.where(x >= 0, 1, e) / (1 + e)
    return out


SOFTPLUS = ActivationSpec(
    "softplus", code=6, forward=_softplus, backward=_softplus_grad,
    grad_from_output=_softplus_grad_y, transcendental=(True, True),
    reference_forward=_softplus_ref, reference_backward=_softplus_ref_grad,
    reference_grad_from_output=lambda y, p: -np.expm1(-y), doc="f(x) = log(1 + exp(x))")


def _gelu(v, p0, p1):
    return v * normal_cdf(v)


def _gelu_grad(d, x, y, p0, p1):
    return d * (normal_cdf(x) + x * normal_pdf(x))


def _gelu_ref(x, out):
    out[...] = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    return out


def _gelu_ref_grad(dy, x, y, out):
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
    out[...] = dy * (cdf + x * pdf)
    return out


GELU = ActivationSpec(
    "gelu", code=7, forward=_gelu, backward=_gelu_grad, transcendental=(True, True),
    reference_forward=_gelu_ref, reference_backward=_gelu_ref_grad,
    doc="f(x) = x Phi(x) (exact erf form)")


# --------------------------------------------------------------------------- piecewise / bumps
def _piecewise_linear(v, lo, hi):
    zero, one = like(v, 0.0), like(v, 1.0)
    return zero if v <= lo else (one if v >= hi else (v - lo) * (one / (hi - lo)))


def _piecewise_linear_grad(d, x, y, lo, hi):
    return d * (like(d, 1.0) / (hi - lo)) if (x > lo and x < hi) else like(d, 0.0)


def _piecewise_linear_grad_y(d, y, lo, hi):
    zero, one = like(d, 0.0), like(d, 1.0)
    return d * (one / (hi - lo)) if (y > zero and y < one) else zero


def _piecewise_linear_ref(x, out, x_min, x_max):
    out[...] = np.clip((x - _cast(x_min, x)) / _cast(x_max - x_min, x), 0, 1)
    return out


def _piecewise_linear_ref_grad(dy, x, y, out, x_min, x_max):
    inside = (x > _cast(x_min, x)) & (x < _cast(x_max, x))
    out[...] = np.where(inside, dy / _cast(x_max - x_min, x), 0)
    return out


PIECEWISE_LINEAR = ActivationSpec(
    "piecewise_linear", params=(("x_min", -0.5), ("x_max", 0.5)),
    constraints=(("x_min", "<", "x_max"),), code=8, forward=_piecewise_linear,
    backward=_piecewise_linear_grad, grad_from_output=_piecewise_linear_grad_y,
    reference_forward=_piecewise_linear_ref, reference_backward=_piecewise_linear_ref_grad,
    reference_grad_from_output=lambda y, p: np.where(
        (y > 0) & (y < 1), 1 / (p[1] - p[0]), 0).astype(y.dtype),
    doc="0 below x_min, 1 above x_max, linear in between")


def _gaussian(v, p0, p1):
    return gaussian(v)


def _gaussian_grad(d, x, y, p0, p1):
    return like(d, -2.0) * d * x * y


def _gaussian_ref(x, out):
    np.exp(-(x * x), out=out)
    return out


def _gaussian_ref_grad(dy, x, y, out):
    out[...] = -2 * dy * x * y
    return out


GAUSSIAN = ActivationSpec(
    "gaussian", code=9, forward=_gaussian, backward=_gaussian_grad,
    transcendental=(True, False), reference_forward=_gaussian_ref,
    reference_backward=_gaussian_ref_grad, doc="f(x) = exp(-x**2)")


def _step(v, p0, p1):
    return like(v, 1.0) if v >= like(v, 0.0) else like(v, 0.0)    # NaN -> 0


def _step_grad(d, x, y, p0, p1):
    return like(d, 0.0)


def _step_grad_y(d, y, p0, p1):
    return like(d, 0.0)


def _step_ref(x, out):
    out[...] = x >= 0
    return out


def _step_ref_grad(dy, x, y, out):
    out[...] = 0
    return out


STEP = ActivationSpec(
    "step", code=10, forward=_step, backward=_step_grad, grad_from_output=_step_grad_y,
    differentiable=False, reference_forward=_step_ref, reference_backward=_step_ref_grad,
    reference_grad_from_output=lambda y, p: np.zeros_like(y),
    doc="1 for x >= 0, else 0 (no gradient flows through it)")


# --------------------------------------------------------------------------- softmax
# Row-wise: its kernels are written by hand (kernels/act_softmax.py, kernels/cuda), as is
# its NumPy reference (numpy_ops.softmax_forward / softmax_backward).
SOFTMAX = ActivationSpec("softmax", row_wise=True, doc="row-wise softmax")


#: The only list of activations (see the module docstring).
SPECS = (IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTPLUS, GELU, PIECEWISE_LINEAR,
         GAUSSIAN, STEP, SOFTMAX)

#: name -> record.
BY_NAME = {spec.name: spec for spec in SPECS}
#: The element-wise activations (those with a code), in code order.
ELEMENTWISE = tuple(sorted((s for s in SPECS if s.code is not None), key=lambda s: s.code))
#: name -> default parameters in kernel order (what the layers and backends iterate).
ACTIVATIONS = {spec.name: spec.defaults for spec in SPECS}
#: name -> code of the compiled kernels, for the element-wise activations.
EPILOGUE_CODES = {spec.name: spec.code for spec in SPECS if spec.code is not None}
#: Activations whose derivative the fused dense backward computes from the output.
FROM_OUTPUT = frozenset(spec.name for spec in SPECS if spec.from_output)
#: Activations whose derivative is zero almost everywhere: no gradient flows through them.
NOT_DIFFERENTIABLE = frozenset(spec.name for spec in SPECS if not spec.differentiable)
#: Activations that act on whole rows rather than element by element.
ROW_WISE = frozenset(spec.name for spec in SPECS if spec.row_wise)

assert [s.code for s in ELEMENTWISE] == list(range(len(ELEMENTWISE))), \
    "codes must be 0 .. n-1, each used once"
assert all(s.forward and s.backward and s.reference_forward and s.reference_backward
           and (s.grad_from_output is None) == (s.reference_grad_from_output is None)
           for s in ELEMENTWISE), "an element-wise record needs its formulas and references"
