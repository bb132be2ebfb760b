"""Layers: the dense layer and one layer per activation of the kernel registry."""
import numpy as np

from .backends.memory import like
from .init import init_bias, init_weight, make_rng
from .kernels.activations import ACTIVATIONS, NOT_DIFFERENTIABLE
from .module import Module, Parameter
from .validation import as_dtype, check_choice, check_number


class Linear(Module):
    """Dense (fully connected) layer on a batch: ``z = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.  ``weight`` has shape (in_features, out_features),
        ``bias`` shape (out_features,).
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
    """

    def __init__(self, in_features, out_features, *, bias=True, init="glorot_uniform",
                 bias_init="zeros", dtype="float32", seed=None):
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

    def _params(self):
        return {"weight": self.weight, "bias": self.bias} if self.bias else {"weight": self.weight}

    def _forward(self, x, backend):
        self._x = x
        out = backend.empty((x.shape[0], self.out_features), x.dtype)
        # the bias is added in the GEMM epilogue, as the output tile is stored
        backend.dense_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                              out, "identity")
        return out

    def _backward(self, grad, backend, need_input_grad):
        w_grad, accumulate = self.weight._grad_for_backward()
        backend.matmul_tn(self._x, grad, w_grad, accumulate)
        if self.bias is not None:
            b_grad, accumulate = self.bias._grad_for_backward()
            backend.bias_grad(grad, b_grad, accumulate)
        if not need_input_grad:
            return None
        dx = backend.empty(self._x.shape, grad.dtype)
        backend.matmul_nt(grad, self.weight.data, dx)
        return dx

    def get_config(self):
        """Constructor arguments, JSON-serialisable (used by ``model.save``)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.use_bias, "init": self.init, "bias_init": self.bias_init}

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.use_bias}, "
                f"init={self.init!r})")


#: Keras's name for the same layer.
Dense = Linear


class Activation(Module):
    """An activation function applied to a batch, by registry name.

    ``Activation("leaky_relu", alpha=0.1)``; the names and parameters are those of
    :data:`fastnn.kernels.activations.ACTIVATIONS`.
    """

    def __init__(self, name, **params):
        defaults = check_choice(name, "activation", ACTIVATIONS)
        self.name = name.lower()
        unknown = set(params) - set(defaults)
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise TypeError(f"activation {self.name!r} got unknown parameter(s) "
                            f"{', '.join(sorted(unknown))}; valid: {valid}")
        self.params = {k: float(check_number(params.get(k, v), k)) for k, v in defaults.items()}
        if self.name == "piecewise_linear" and not self.params["x_min"] < self.params["x_max"]:
            raise ValueError(f"piecewise_linear needs x_min < x_max, got "
                             f"x_min={self.params['x_min']}, x_max={self.params['x_max']}")
        if self.name == "elu" and self.params["alpha"] < 0:
            raise ValueError(f"elu needs alpha >= 0, got {self.params['alpha']}")
        self._args = tuple(self.params.values())
        self.differentiable = self.name not in NOT_DIFFERENTIABLE

    def get_config(self):
        """Constructor arguments, JSON-serialisable (used by ``model.save``)."""
        return {"name": self.name, **self.params}

    def _forward(self, x, backend):
        out = backend.empty(x.shape, x.dtype)
        getattr(backend, f"{self.name}_forward")(x, out, *self._args)
        self._x, self._y = x, out
        return out

    def _backward(self, grad, backend, need_input_grad):
        out = backend.empty(grad.shape, grad.dtype)
        getattr(backend, f"{self.name}_backward")(grad, self._x, self._y, out, *self._args)
        return out

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
