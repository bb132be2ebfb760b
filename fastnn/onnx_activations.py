"""The ONNX export of each activation of the registry (``fastnn.kernels.activation_specs``),
by name: ``fn(graph, x_name, params) -> output name`` (``graph``: a
:class:`fastnn.onnx_export.OnnxGraph`).  Each matches its record's formula in the model's
dtype; a test checks that every registered activation has one."""
import math

import numpy as np

#: Activation registry name -> ``fn(graph, x_name, params) -> output name``.
ACTIVATIONS = {}


def exports_activation(name):
    """Decorator: register ``fn(graph, x_name, params)`` for the activation ``name``."""
    def register(fn):
        ACTIVATIONS[name] = fn
        return fn
    return register


# ---------------------------------------------------------------------- activations
# Each matches its record in fastnn/kernels/activation_specs.py.  A native operator is used
# where its float attribute holds the parameter exactly (ONNX attributes are float32: a
# float64 model's alpha=0.01 is not), else the same formula from elementary operators.
def _exact_attribute(graph, value):
    return graph.dtype == np.float32 or float(np.float32(value)) == value


@exports_activation("identity")
def _identity(graph, x, params):
    return x


@exports_activation("sigmoid")
def _sigmoid(graph, x, params):
    beta = params["beta"]
    z = x if beta == 1.0 else graph.node("Mul", [x, graph.const(beta)])
    return graph.node("Sigmoid", [z])


@exports_activation("tanh")
def _tanh(graph, x, params):
    return graph.node("Tanh", [x])


@exports_activation("relu")
def _relu(graph, x, params):
    return graph.node("Relu", [x])


@exports_activation("leaky_relu")
def _leaky_relu(graph, x, params):
    alpha = params["alpha"]
    if _exact_attribute(graph, alpha):
        return graph.node("LeakyRelu", [x], alpha=alpha)
    positive = graph.node("Greater", [x, graph.const(0.0)])
    return graph.node("Where", [positive, x, graph.node("Mul", [x, graph.const(alpha)])])


@exports_activation("elu")
def _elu(graph, x, params):
    alpha = params["alpha"]
    if graph.dtype == np.float32:           # (onnxruntime has no float64 Elu)
        return graph.node("Elu", [x], alpha=alpha)
    positive = graph.node("Greater", [x, graph.const(0.0)])
    expm1 = graph.node("Sub", [graph.node("Exp", [x]), graph.const(1.0)])
    return graph.node("Where", [positive, x, graph.node("Mul", [expm1, graph.const(alpha)])])


@exports_activation("softplus")
def _softplus(graph, x, params):
    # max(x, 0) + log(1 + exp(-|x|)): fastnn's overflow-free form (ONNX's Softplus is
    # log(exp(x) + 1), which overflows for large x in some runtimes)
    tail = graph.node("Exp", [graph.node("Neg", [graph.node("Abs", [x])])])
    log = graph.node("Log", [graph.node("Add", [tail, graph.const(1.0)])])
    return graph.node("Add", [graph.node("Relu", [x]), log])


@exports_activation("gelu")
def _gelu(graph, x, params):
    if graph.dtype == np.float64:
        # x * Phi(x) = x * erfc(-x / sqrt 2) / 2, fastnn's form; onnxruntime has no float64
        # Erf (nor Gelu), so erfc is written with elementary operators
        z = graph.node("Mul", [x, graph.const(-1.0 / math.sqrt(2.0))])
        cdf = graph.node("Mul", [_erfc_float64(graph, z), graph.const(0.5)])
        return graph.node("Mul", [x, cdf])
    if graph.opset >= 20:
        return graph.node("Gelu", [x], approximate="none")
    # x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 (fastnn computes erfc(-x/sqrt 2)/2,
    # more precise in the far negative tail, where both are ~0)
    erf = graph.node("Erf", [graph.node("Mul", [x, graph.const(1.0 / math.sqrt(2.0))])])
    cdf = graph.node("Mul", [graph.node("Add", [erf, graph.const(1.0)]), graph.const(0.5)])
    return graph.node("Mul", [x, cdf])


#: erfc in float64 (:func:`_erfc_float64`): below |z| = 2.5 a series of 40 terms, above
#: it a continued fraction of 32 terms, each truncated below 1e-15 relative there.  With
#: the roundings, GELU is within ~1e-12 relative of fastnn's (measured against mpmath:
#: the cancellation in 1 - erf near |z| = 2.5 costs ~1e-13, the rounding of z^2 in
#: exp(-z^2) ~2e-13 at GELU's smallest values, x ~ -37).
_ERFC_SPLIT, _SERIES_TERMS, _FRACTION_TERMS = 2.5, 40, 32


def _erfc_float64(graph, z):
    """``erfc(z)`` from elementary float64 operators (~150 nodes, all element-wise).

    ``|z| < 2.5``: ``1 - erf(z)`` with ``erf(z) = 2/sqrt(pi) z exp(-z^2) sum_n
    (2 z^2)^n / (2n + 1)!!`` (Abramowitz & Stegun 7.1.6: positive terms, no cancellation).
    ``|z| >= 2.5``: ``erfc(|z|) = exp(-z^2) / sqrt(pi) / (|z| + (1/2) / (|z| + 1 / (|z| +
    (3/2) / (|z| + ...))))`` (Laplace's continued fraction, evaluated from the last term
    up; precise in the tail), and ``erfc(z) = 2 - erfc(|z|)`` for negative z.
    """
    node, const = graph.node, graph.const
    near_z = node("Clip", [z, const(-_ERFC_SPLIT), const(_ERFC_SPLIT)])
    square = node("Mul", [near_z, near_z])
    # Horner in u = 2 z^2 / T, T = 2 * 2.5^2 (u in [0, 1]) with coefficients T^n / (2n+1)!!:
    # those of t = 2 z^2 go below float32's smallest number, and onnxruntime's optimiser
    # removes Add(x, c) for such a c, as if it were 0
    scale = 2.0 * _ERFC_SPLIT ** 2
    u = node("Mul", [square, const(2.0 / scale)])
    coefficients = [1.0]
    for n in range(1, _SERIES_TERMS):
        coefficients.append(coefficients[-1] * scale / (2 * n + 1))
    series = const(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        series = node("Add", [node("Mul", [series, u]), const(c)])
    gauss = node("Exp", [node("Neg", [square])])
    erf = node("Mul", [node("Mul", [near_z, gauss]),
                       node("Mul", [series, const(2.0 / math.sqrt(math.pi))])])
    near = node("Sub", [const(1.0), erf])
    a = node("Max", [node("Abs", [z]), const(_ERFC_SPLIT)])
    fraction = a
    for k in range(_FRACTION_TERMS, 0, -1):
        fraction = node("Add", [a, node("Div", [const(k / 2.0), fraction])])
    tail = node("Div", [node("Mul", [node("Exp", [node("Neg", [node("Mul", [a, a])])]),
                                     const(1.0 / math.sqrt(math.pi))]), fraction])
    far = node("Where", [node("Greater", [z, const(0.0)]), tail,
                         node("Sub", [const(2.0), tail])])
    return node("Where", [node("Less", [node("Abs", [z]), const(_ERFC_SPLIT)]), near, far])


@exports_activation("piecewise_linear")
def _piecewise_linear(graph, x, params):
    # 0 for x <= x_min, 1 for x >= x_max, else (x - x_min) * (1 / (x_max - x_min)) (the
    # reciprocal in the model's dtype, as the kernel)
    lo, hi = graph.dtype.type(params["x_min"]), graph.dtype.type(params["x_max"])
    slope = graph.dtype.type(1) / (hi - lo)
    ramp = graph.node("Mul", [graph.node("Sub", [x, graph.const(lo)]), graph.const(slope)])
    ramp = graph.node("Clip", [ramp, graph.const(0.0), graph.const(1.0)])
    above = graph.node("GreaterOrEqual", [x, graph.const(hi)])
    return graph.node("Where", [above, graph.const(1.0), ramp])


@exports_activation("gaussian")
def _gaussian(graph, x, params):
    return graph.node("Exp", [graph.node("Neg", [graph.node("Mul", [x, x])])])


@exports_activation("step")
def _step(graph, x, params):
    # 1 for x >= 0, else 0 (NaN -> 0, as the kernel)
    to = graph.onnx.helper.np_dtype_to_tensor_dtype(graph.dtype)
    return graph.node("Cast", [graph.node("GreaterOrEqual", [x, graph.const(0.0)])], to=to)


@exports_activation("softmax")
def _softmax(graph, x, params):
    return graph.node("Softmax", [x], axis=-1)
