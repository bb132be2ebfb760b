"""Layers: the dense layer and one layer per activation of the kernel registry.

Both act on the last axis of their input, whatever its rank: ``(batch, features)``,
``(batch, time, features)``, ...; the kernels see the leading axes as rows
(:func:`fastnn.module.rows`).
"""
import numpy as np

from .backends.memory import like
from .init import init_bias, init_weight, make_rng
from .kernels.activation_specs import BY_NAME, check_params
from .module import Module, Parameter, rows, unrows
from .validation import as_dtype, check_choice, check_number


class Linear(Module):
    """Dense (fully connected) layer on the last axis: ``z = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.  ``weight`` has shape (in_features, out_features),
        ``bias`` shape (out_features,); an input ``(..., in_features)`` gives an output
        ``(..., out_features)``.
    bias : bool, default True
        Whether the layer has a bias.
    init : str, default "glorot_uniform"
        Weight initialiser: ``glorot_uniform``/``glorot_normal`` (alias ``xavier_*``) or
        ``he_uniform``/``he_normal`` (alias ``kaiming_*``); see :mod:`fastnn.init`.
    bias_init : "zeros" or float, default "zeros"
        Zero biases, or a small constant such as 0.01 (keeps ReLU units alive at start).
    dtype : "float32" or "float64", default "float32"
    seed : int or numpy.random.Generator, optional
        Source of the initial weights; default: the generator seeded by
        :func:`fastnn.manual_seed`.

    Notes
    -----
    ``Sequential`` fuses a Linear layer with the activation after it when that
    activation's derivative follows from its output (:meth:`Activation.fusable`): the
    layer's forward then applies the activation in the matrix product's epilogue, and its
    backward computes the activation derivative and the bias gradient in one pass (see
    ``fastnn.kernels.dense``).  The results are those of the two separate layers.
    """

    def __init__(self, in_features, out_features, *, bias=True, init="glorot_uniform",
                 bias_init="zeros", dtype="float32", seed=None):
        super().__init__()
        self.in_features = check_number(in_features, "in_features", low=1, integer=True)
        self.out_features = check_number(out_features, "out_features", low=1, integer=True)
        self.n_features = self.in_features
        self.init, self.bias_init, self.use_bias = init, bias_init, bool(bias)
        dtype = as_dtype(dtype)
        self.weight = Parameter(np.empty((in_features, out_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) if bias else None
        self.reset_parameters(make_rng(seed))

    def reset_parameters(self, rng):
        """Draw new weights from ``rng`` and reset the bias."""
        dtype = self.weight.dtype
        weight = init_weight(self.init, self.in_features, self.out_features, dtype, rng)
        self.weight.data = like(weight, self.weight.data)       # stays on its device
        if self.bias is not None:
            self.bias.data = like(init_bias(self.bias_init, self.out_features, dtype),
                                  self.bias.data)

    def output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_features,)

    def _forward(self, x, backend, activation=None):
        """``f(x @ W + b)`` with ``f`` the fused ``activation`` (an :class:`Activation`)
        or the identity; the bias and ``f`` run in the product's epilogue."""
        x2 = rows(x)
        out = backend.empty((x2.shape[0], self.out_features), x.dtype)
        name, args = ("identity", ()) if activation is None else (activation.name,
                                                                  activation.args)
        backend.dense_forward(x2, self.weight.data,
                              None if self.bias is None else self.bias.data, out, name, *args)
        self._x, self._activation = x, activation
        self._y = out if activation is not None else None
        return unrows(out, x)

    def _backward(self, grad, backend, need_input_grad):
        x2, g2 = rows(self._x), rows(grad)
        w_grad, accumulate_w = self.weight._grad_for_backward()
        db, accumulate_b = (None, False) if self.bias is None else self.bias._grad_for_backward()
        dx = backend.empty(x2.shape, grad.dtype) if need_input_grad else None
        activation = self._activation
        if activation is None:
            # no activation to differentiate: the gradient is dz itself
            backend.matmul_tn(x2, g2, w_grad, accumulate_w)
            if db is not None:
                backend.bias_grad(g2, db, accumulate_b)
            if dx is not None:
                backend.matmul_nt(g2, self.weight.data, dx)
        else:
            dz = backend.empty(g2.shape, grad.dtype)
            backend.dense_backward(g2, x2, self.weight.data, self._y, dz, w_grad, db, dx,
                                   accumulate_w, accumulate_b, activation.name,
                                   *activation.args)
        if dx is None:
            return None
        return unrows(dx, self._x)

    def get_config(self):
        """Constructor arguments, JSON-serialisable (used by ``model.save``)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.use_bias, "init": self.init, "bias_init": self.bias_init}

    @classmethod
    def from_config(cls, config):
        return cls(**config, seed=0)     # the weights come from the file

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.use_bias}, "
                f"init={self.init!r})")


#: Keras's name for the same layer.
Dense = Linear


class Activation(Module):
    """An activation function applied element-wise (softmax: along the last axis), by
    registry name.

    ``Activation("leaky_relu", alpha=0.1)``; the names, parameters and their
    constraints are the records of :mod:`fastnn.kernels.activation_specs`.

    Attributes
    ----------
    name : str
    params : dict
        The parameter values, in the order the kernels take them.
    args : tuple
        ``tuple(params.values())``: the kernels' scalar arguments.
    spec : ActivationSpec
        The activation's record.
    differentiable : bool
        False for activations with a zero derivative almost everywhere (step).
    """

    def __init__(self, name, **params):
        super().__init__()
        check_choice(name, "activation", BY_NAME)
        self.spec = BY_NAME[name.lower()]
        self.name = self.spec.name
        defaults = self.spec.defaults
        unknown = set(params) - set(defaults)
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise TypeError(f"activation {self.name!r} got unknown parameter(s) "
                            f"{', '.join(sorted(unknown))}; valid: {valid}")
        self.params = {k: float(check_number(params.get(k, v), k)) for k, v in defaults.items()}
        check_params(self.spec, self.params)
        self.args = tuple(self.params.values())
        self.differentiable = self.spec.differentiable

    @property
    def fusable(self):
        """True if a preceding Linear layer can apply this activation in its product's
        epilogue and differentiate it from the output (see :class:`Linear`)."""
        return self.spec.derivative_from_output(self.params)

    def get_config(self):
        """Constructor arguments, JSON-serialisable (used by ``model.save``): the
        parameters, and the registry name for a plain ``Activation``."""
        return dict(self.params) if type(self) is not Activation else {"name": self.name,
                                                                        **self.params}

    def _forward(self, x, backend):
        x2 = rows(x)
        out = backend.empty(x2.shape, x.dtype)
        getattr(backend, f"{self.name}_forward")(x2, out, *self.args)
        self._x, self._y = x2, out
        return unrows(out, x)

    def _backward(self, grad, backend, need_input_grad):
        g2 = rows(grad)
        out = backend.empty(g2.shape, grad.dtype)
        getattr(backend, f"{self.name}_backward")(g2, self._x, self._y, out, *self.args)
        return unrows(out, grad)

    def __repr__(self):
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})" if type(self) is not Activation \
            else f"Activation({self.name!r}{', ' + args if args else ''})"


class Identity(Activation):
    """Linear (identity) activation: ``f(x) = x``."""
    def __init__(self):
        super().__init__("identity")


class Sigmoid(Activation):
    """Logistic sigmoid with slope ``beta``: ``f(x) = 1 / (1 + exp(-beta x))``."""
    def __init__(self, beta=1.0):
        super().__init__("sigmoid", beta=beta)


class Tanh(Activation):
    """Hyperbolic tangent."""
    def __init__(self):
        super().__init__("tanh")


class ReLU(Activation):
    """Rectified linear unit: ``f(x) = max(x, 0)``."""
    def __init__(self):
        super().__init__("relu")


class LeakyReLU(Activation):
    """Leaky ReLU: ``f(x) = x`` for x > 0, else ``alpha x``."""
    def __init__(self, alpha=0.01):
        super().__init__("leaky_relu", alpha=alpha)


class ELU(Activation):
    """Exponential linear unit: ``f(x) = x`` for x > 0, else ``alpha (exp(x) - 1)``."""
    def __init__(self, alpha=1.0):
        super().__init__("elu", alpha=alpha)


class Softplus(Activation):
    """Softplus: ``f(x) = log(1 + exp(x))``."""
    def __init__(self):
        super().__init__("softplus")


class GELU(Activation):
    """Gaussian error linear unit (exact erf form): ``f(x) = x Phi(x)``."""
    def __init__(self):
        super().__init__("gelu")


class PiecewiseLinear(Activation):
    """0 below ``x_min``, 1 above ``x_max``, linear in between."""
    def __init__(self, x_min=-0.5, x_max=0.5):
        super().__init__("piecewise_linear", x_min=x_min, x_max=x_max)


class Gaussian(Activation):
    """Gaussian bump: ``f(x) = exp(-x**2)``."""
    def __init__(self):
        super().__init__("gaussian")


class Step(Activation):
    """Unit (Heaviside) step: 1 for x >= 0, else 0.  Forward-only: its derivative is zero
    almost everywhere, so no gradient flows through it."""
    def __init__(self):
        super().__init__("step")


class Softmax(Activation):
    """Row-wise softmax.  For classification, prefer raw logits with
    :class:`fastnn.CrossEntropyLoss`, which fuses softmax into the loss."""
    def __init__(self):
        super().__init__("softmax")
