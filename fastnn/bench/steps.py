"""The training step of the benchmark MLP, once per contender.

Every contender runs the same step on the same batch, from the same initial weights::

    784 -> 512 -> 256 -> 10 MLP, ReLU, softmax cross-entropy on integer labels,
    SGD with momentum 0.9 (v = 0.9 v + g, p -= lr v), lr = 1e-3, float32

(fastnn and PyTorch also with ``optimizer="adam"``: Adam with PyTorch's defaults, lr 1e-3;
and with ``batchnorm=True, dropout=p``: every hidden layer ``Linear(bias=False) ->
BatchNorm1d -> ReLU -> Dropout(p)`` in training mode, the "training-bn" section.)

Contenders are objects: ``step()`` runs one step, ``parameters()`` returns the current
``[W_1, b_1, W_2, b_2, ...]`` as NumPy arrays in fastnn's layout (W of shape (fan_in,
fan_out)), so the tests can check that every contender computes the same update.
"""
import importlib.util

import numpy as np

from .numpy_step import NumpyMLPStep
from .timing import Contender

MLP_WIDTHS = (784, 512, 256, 10)
LR, MOMENTUM = 1e-3, 0.9
#: The dropout probability of the timed BatchNorm + dropout step (the "training-bn" section).
BN_DROPOUT = 0.2

#: The size of the NumPy product run between fastnn steps in the coexistence section:
#: the first layer's forward product at B = 128, ``(128, 784) @ (784, 512)``.
COEXISTING_MATMUL = (128, 784, 512)


def mlp(seed=0, dtype="float32", widths=MLP_WIDTHS, batchnorm=False, dropout=None):
    """The benchmark network: Linear/ReLU layers of ``widths`` (784-512-256-10).

    ``batchnorm=True``: each hidden Linear has no bias and is followed by a
    ``BatchNorm1d`` (whose shift replaces the bias); ``dropout=p`` (a number, 0 included):
    a ``Dropout(p)`` after each hidden ReLU.  The output layer is a plain Linear.
    """
    from .. import BatchNorm1d, Dropout, Linear, ReLU, Sequential
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        hidden = i < len(widths) - 2
        layers.append(Linear(fan_in, fan_out, init="he_normal",
                             bias=not (hidden and batchnorm)))
        if hidden:
            if batchnorm:
                layers.append(BatchNorm1d(fan_out))
            layers.append(ReLU())
            if dropout is not None:
                layers.append(Dropout(dropout))
    return Sequential(*layers, seed=seed, dtype=dtype)


def step_flops(batch, widths=MLP_WIDTHS):
    """FLOPs of the step's matrix products: forward ``x @ W`` and backward ``dW`` for every
    layer, ``dx`` for all but the first: ``2 B (3 sum(n_in n_out) - n_0 n_1)``."""
    weights = [a * b for a, b in zip(widths[:-1], widths[1:])]
    return 2.0 * batch * (3 * sum(weights) - weights[0])


def batch_data(batch, dtype=np.float32):
    """The fixed batch every contender trains on: ``x`` (B, 784) in [0, 1), labels (B,)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, MLP_WIDTHS[0]), dtype=np.float32).astype(dtype)
    labels = rng.integers(0, MLP_WIDTHS[-1], batch)
    return x, labels


def initial_parameters(dtype=np.float32, batchnorm=False, dropout=None):
    """``[W_1, b_1, ...]`` of :func:`mlp` with seed 0: the weights every contender starts
    from (``batchnorm``: ``[W_1, gamma_1, beta_1, W_2, gamma_2, beta_2, W_3, b_3]``).
    ``dropout`` matters too: each Dropout layer draws its stream's seed from the model's
    generator, between the weights of the layers around it."""
    model = mlp(dtype=np.dtype(dtype).name, batchnorm=batchnorm, dropout=dropout)
    return [np.array(p.data) for _, p in model.named_parameters()]


class FastnnStep:
    """fastnn's step: ``model(x)``, the fused loss, ``zero_grad``, ``backward``, ``step``.

    ``backend`` is "numba" (fastnn's kernels) or "numpy" (fastnn's own NumPy backend);
    ``optimizer`` "sgd" (momentum 0.9) or "adam"; ``batchnorm``, ``dropout``: the
    network of :func:`mlp` (in training mode).
    """

    def __init__(self, batch, backend="numba", dtype=np.float32, model=None, x=None,
                 labels=None, optimizer="sgd", batchnorm=False, dropout=None):
        from .. import SGD, Adam, CrossEntropyLoss
        self.model = model if model is not None else mlp(
            dtype=np.dtype(dtype).name, batchnorm=batchnorm, dropout=dropout)
        self.model.to(backend)
        params = self.model.parameters()
        self.optimizer = (Adam(params, lr=LR, backend=backend) if optimizer == "adam" else
                          SGD(params, lr=LR, momentum=MOMENTUM, backend=backend))
        self.loss_fn = CrossEntropyLoss()
        default_x, default_labels = batch_data(batch, dtype)
        self.x = default_x if x is None else x
        self.labels = default_labels if labels is None else labels

    def __call__(self):
        logits = self.model(self.x)
        # the loss kernel without re-validating labels on every step, as fit() does
        loss, grad = self.loss_fn._compute(logits, self.labels, self.model._last_backend)
        self.optimizer.zero_grad()
        self.model.backward(grad)
        self.optimizer.step()
        return loss

    def parameters(self):
        return [np.array(p.data) for _, p in self.model.named_parameters()]

    def gradients(self):
        """The last step's gradients, in the order of :meth:`parameters`."""
        return [np.array(p.grad) for _, p in self.model.named_parameters()]


class HandwrittenNumpyStep:
    """The careful NumPy user's step (:class:`NumpyMLPStep`) on the benchmark batch."""

    def __init__(self, batch, dtype=np.float32):
        params = initial_parameters(dtype)
        self.net = NumpyMLPStep(params[0::2], params[1::2], batch, LR, MOMENTUM)
        self.x, self.labels = batch_data(batch, dtype)

    def __call__(self):
        return self.net(self.x, self.labels)

    def parameters(self):
        return [a.copy() for pair in zip(self.net.weights, self.net.biases) for a in pair]


class TorchStep:
    """PyTorch eager (CPU) on the same step, from NumPy arrays as fastnn's step is;
    ``optimizer="adam"``: ``torch.optim.Adam`` with its defaults (what a user gets).

    ``batchnorm``/``dropout`` as in :func:`mlp`: ``nn.Linear(bias=False)``,
    ``nn.BatchNorm1d`` (eps 1e-5, momentum 0.1: fastnn's defaults), ``nn.ReLU``,
    ``nn.Dropout(p)``, in training mode.  ``dtype`` float64 is for the tests.
    """

    def __init__(self, batch, threads=None, optimizer="sgd", batchnorm=False, dropout=None,
                 dtype=np.float32):
        import numba
        import torch
        # as many threads as fastnn's kernels get (torch defaults to the physical cores)
        torch.set_num_threads(threads or numba.get_num_threads())
        params = iter(initial_parameters(dtype, batchnorm, dropout))
        kind = {"dtype": torch.float64 if np.dtype(dtype) == np.float64 else torch.float32}
        layers = []
        n_layers = len(MLP_WIDTHS) - 1
        for i, (fan_in, fan_out) in enumerate(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])):
            hidden = i < n_layers - 1
            with_bn = hidden and batchnorm
            linear = torch.nn.Linear(fan_in, fan_out, bias=not with_bn, **kind)
            owned = [linear.weight] if with_bn else [linear.weight, linear.bias]
            layers.append(linear)
            if with_bn:
                norm = torch.nn.BatchNorm1d(fan_out, **kind)
                owned += [norm.weight, norm.bias]
                layers.append(norm)
            if hidden:
                layers.append(torch.nn.ReLU())
                if dropout is not None:
                    layers.append(torch.nn.Dropout(dropout))
            with torch.no_grad():
                for k, tensor in enumerate(owned):
                    value = next(params)
                    # torch stores W as (fan_out, fan_in)
                    tensor.copy_(torch.from_numpy(value.T.copy() if k == 0 else value))
        self.torch = torch
        self.model = torch.nn.Sequential(*layers)
        self.model.train()
        self.optimizer = (torch.optim.Adam(self.model.parameters(), lr=LR)
                          if optimizer == "adam" else
                          torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.x, self.labels = batch_data(batch, dtype)

    def __call__(self):
        # conversion from NumPy is part of the user's cost (zero-copy here)
        x, labels = self.torch.from_numpy(self.x), self.torch.from_numpy(self.labels)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), labels)
        loss.backward()
        self.optimizer.step()
        return loss

    def _in_fastnn_layout(self, value_of):
        """``value_of(tensor)`` of every parameter, in fastnn's order and layout (W as
        (fan_in, fan_out))."""
        out = []
        for module in self.model:
            if isinstance(module, self.torch.nn.Linear):
                out.append(value_of(module.weight).T.copy())
                if module.bias is not None:
                    out.append(value_of(module.bias).copy())
            elif isinstance(module, self.torch.nn.BatchNorm1d):
                out += [value_of(module.weight).copy(), value_of(module.bias).copy()]
        return out

    def parameters(self):
        return self._in_fastnn_layout(lambda t: t.detach().numpy())

    def gradients(self):
        """The last step's gradients, in the order of :meth:`parameters`."""
        return self._in_fastnn_layout(lambda t: t.grad.detach().numpy())


def _jax_step_function(n_layers):
    """``step(params, velocity, x, labels) -> (params, velocity, loss)`` compiled by
    ``jax.jit``; params and velocity are tuples ``(W_1, b_1, ...)``, donated so that XLA
    may update them in place (what a JAX user does for a training loop)."""
    import jax
    import jax.numpy as jnp

    def loss_of(params, x, labels):
        h = x
        for layer in range(n_layers):
            h = h @ params[2 * layer] + params[2 * layer + 1]
            if layer < n_layers - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def step(params, velocity, x, labels):
        loss, grads = jax.value_and_grad(loss_of)(params, x, labels)
        velocity = tuple(MOMENTUM * v + g for v, g in zip(velocity, grads))
        params = tuple(p - LR * v for p, v in zip(params, velocity))
        return params, velocity, loss

    return jax.jit(step, donate_argnums=(0, 1))


class JaxStep:
    """``jax.jit`` of the whole step (float32, CPU), waited for with ``block_until_ready``."""

    def __init__(self, batch):
        import jax
        import jax.numpy as jnp
        self.jax = jax
        params = initial_parameters()
        self.params = tuple(jnp.asarray(p) for p in params)
        self.velocity = tuple(jnp.zeros_like(p) for p in self.params)
        self._step = _jax_step_function(len(params) // 2)
        x, labels = batch_data(batch)
        # NumPy arrays, converted on every call as a data loader's batches would be;
        # int32 labels: JAX's default integer type without x64
        self.x, self.labels = x, labels.astype(np.int32)

    def __call__(self):
        self.params, self.velocity, loss = self._step(self.params, self.velocity, self.x,
                                                      self.labels)
        self.jax.block_until_ready((self.params, self.velocity, loss))
        return loss

    def parameters(self):
        return [np.array(p) for p in self.params]


class CoexistingMatmul:
    """``np.matmul(a, b, out=c)`` of :data:`COEXISTING_MATMUL` size: the NumPy work a real
    pipeline does between two training steps (OpenBLAS, with its own thread pool)."""

    def __init__(self, shape=COEXISTING_MATMUL):
        m, k, n = shape
        rng = np.random.default_rng(1)
        self.a = rng.standard_normal((m, k), dtype=np.float32)
        self.b = rng.standard_normal((k, n), dtype=np.float32)
        self.out = np.empty((m, n), np.float32)

    def __call__(self):
        np.matmul(self.a, self.b, out=self.out)


#: Contenders by name: ``factory(batch) -> step``.  "fastnn+matmul" is fastnn's step with
#: a NumPy matmul after every step (untimed): the coexistence measurement.
STEPS = {
    "fastnn": lambda batch: FastnnStep(batch, "numba"),
    "numpy": HandwrittenNumpyStep,
    "numpy-backend": lambda batch: FastnnStep(batch, "numpy"),
    "torch": TorchStep,
    "jax": JaxStep,
    # the BatchNorm + dropout network (the "training-bn" section)
    "fastnn-bn": lambda batch: FastnnStep(batch, "numba", batchnorm=True, dropout=BN_DROPOUT),
    "torch-bn": lambda batch: TorchStep(batch, batchnorm=True, dropout=BN_DROPOUT),
    # the command line's MNIST transformer (the "training-transformer" section)
    "fastnn-transformer": lambda batch: _transformer_steps().fastnn_transformer_step(batch),
    "torch-transformer": lambda batch: _transformer_steps().TorchTransformerStep(batch),
}
CONTENDERS = (*STEPS, "fastnn+matmul")

#: The optional third-party contenders and the module each needs.
OPTIONAL = {"torch": "torch", "jax": "jax", "torch-bn": "torch", "torch-transformer": "torch"}


def _transformer_steps():
    from . import transformer_step     # imports this module: not at the top
    return transformer_step


def available(name):
    """Whether contender ``name`` can run here (its library is importable)."""
    module = OPTIONAL.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def library_version(name):
    """Version string of an optional contender's library (imports it)."""
    return importlib.import_module(OPTIONAL[name]).__version__


def make_contender(name, batch):
    """A :class:`Contender` for contender ``name`` at batch size ``batch``."""
    if name == "fastnn+matmul":
        return Contender(name, STEPS["fastnn"](batch), between=CoexistingMatmul())
    if name not in STEPS:
        raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
    return Contender(name, STEPS[name](batch))
