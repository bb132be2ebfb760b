"""asv: the CUDA backend on a GPU: its kernels and a training step of the MLP.

Every case is skipped (``NotImplementedError`` in ``setup``) where no CUDA GPU can be
used, or under Numba's CUDA simulator, whose timings would mean nothing; ``numba.cuda``
is imported in ``setup`` only, so this module imports on any machine.  Kernel launches
are asynchronous: every timed function ends with ``cuda.synchronize()``, so a timing
covers the work, not just the launch.  Data is float32 and lives on the device, except
where a case says otherwise.
"""
import os

import numpy as np

from fastnn import bench

MLP_LAYERS = ["784x512", "512x256", "256x10"]


def _gpu():
    """``numba.cuda``, or ``NotImplementedError`` (asv: skipped) without a usable GPU."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise NotImplementedError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)")
    try:
        from numba import cuda
        available = cuda.is_available()
    except Exception:           # no numba.cuda, or a broken driver install
        available = False
    if not available:
        raise NotImplementedError("no CUDA GPU")
    return cuda


def _ops():
    from fastnn.backends import get_backend
    return get_backend("cuda")


def _device_random(cuda, shape, scale=1.0, seed=0):
    host = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    return cuda.to_device(host)


class CudaGEMM:
    """The three products of a dense layer of the MLP, per batch size (as ``GEMM``)."""
    params = (["nn", "nt", "tn"], MLP_LAYERS, bench.BATCHES)
    param_names = ["layout", "layer", "batch"]

    def setup(self, layout, layer, batch):
        self.cuda = cuda = _gpu()
        fan_in, fan_out = map(int, layer.split("x"))
        m, k, n = {"nn": (batch, fan_in, fan_out), "nt": (batch, fan_out, fan_in),
                   "tn": (fan_in, batch, fan_out)}[layout]
        shapes = {"nn": ((m, k), (k, n)), "nt": ((m, k), (n, k)), "tn": ((k, m), (k, n))}
        a_shape, b_shape = shapes[layout]
        self.a, self.b = _device_random(cuda, a_shape, seed=1), _device_random(cuda, b_shape, seed=2)
        self.out = cuda.device_array((m, n), np.float32)
        self.fn = getattr(_ops(), {"nn": "matmul", "nt": "matmul_nt", "tn": "matmul_tn"}[layout])
        self.time_gemm(layout, layer, batch)

    def time_gemm(self, layout, layer, batch):
        self.fn(self.a, self.b, self.out)
        self.cuda.synchronize()


class CudaActivation:
    """ReLU forward and backward on a (batch, 512) activation."""
    params = (["forward", "backward"], bench.BATCHES)
    param_names = ["direction", "batch"]

    def setup(self, direction, batch):
        self.cuda = cuda = _gpu()
        ops = _ops()
        shape = (batch, 512)
        x, dy = _device_random(cuda, shape, seed=1), _device_random(cuda, shape, seed=2)
        out = cuda.device_array(shape, np.float32)
        y = ops.relu_forward(x, cuda.device_array(shape, np.float32))
        if direction == "forward":
            self.fn = lambda: ops.relu_forward(x, out)
        else:
            self.fn = lambda: ops.relu_backward(dy, x, y, out)
        self.time_activation(direction, batch)

    def time_activation(self, direction, batch):
        self.fn()
        self.cuda.synchronize()


class CudaSoftmaxXent:
    """Fused softmax cross-entropy value and gradient on (batch, 10) logits (the loss
    value is copied to the host, as in training)."""
    params = bench.BATCHES
    param_names = ["batch"]

    def setup(self, batch):
        self.cuda = cuda = _gpu()
        self.logits = _device_random(cuda, (batch, 10), scale=3.0)
        self.labels = cuda.to_device(np.random.default_rng(0).integers(0, 10, batch))
        self.grad = cuda.device_array((batch, 10), np.float32)
        self.fn = _ops().softmax_xent
        self.time_softmax_xent(batch)

    def time_softmax_xent(self, batch):
        self.fn(self.logits, self.labels, self.grad)
        self.cuda.synchronize()


class CudaSGD:
    """SGD update of a bias (512) and of the first weight matrix (784 x 512)."""
    params = ([False, True], [512, 784 * 512])
    param_names = ["momentum", "size"]

    def setup(self, momentum, size):
        self.cuda = cuda = _gpu()
        ops = _ops()
        p, g = _device_random(cuda, size, seed=1), _device_random(cuda, size, 1e-3, seed=2)
        v = cuda.to_device(np.zeros(size, np.float32))
        if momentum:
            self.fn = lambda: ops.sgd_momentum_update(p, g, v, 1e-3, 0.9, 0.0, False)
        else:
            self.fn = lambda: ops.sgd_update(p, g, 1e-3, 0.0)
        self.time_update(momentum, size)

    def time_update(self, momentum, size):
        self.fn()
        self.cuda.synchronize()


class CudaTrainingStep:
    """One SGD-momentum step of the 784-512-256-10 MLP with softmax cross-entropy,
    through the public API (``Sequential(..., backend="cuda")``).  ``batch_from``:
    "host" hands NumPy arrays to the model and the loss each step, as a training loop
    over host data does (the batch is copied to the device inside the step); "device"
    passes device arrays placed once, the kernels' own cost."""
    params = (bench.BATCHES, ["host", "device"])
    param_names = ["batch", "batch_from"]

    def setup(self, batch, batch_from):
        import fastnn as fnn
        self.cuda = cuda = _gpu()
        widths = bench.MLP_WIDTHS
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(fnn.Linear(fan_in, fan_out, init="he_normal"))
            if i < len(widths) - 2:
                layers.append(fnn.ReLU())
        self.model = fnn.Sequential(*layers, seed=0, dtype="float32", backend="cuda")
        self.opt = fnn.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, backend="cuda")
        self.loss_fn = fnn.CrossEntropyLoss()
        rng = np.random.default_rng(0)
        self.x = rng.random((batch, widths[0]), dtype=np.float32)
        self.y = rng.integers(0, widths[-1], batch)
        if batch_from == "device":
            self.x, self.y = cuda.to_device(self.x), cuda.to_device(self.y)
        self.time_step(batch, batch_from)

    def time_step(self, batch, batch_from):
        logits = self.model(self.x)
        _, grad = self.loss_fn(logits, self.y)
        self.opt.zero_grad()
        self.model.backward(grad)
        self.opt.step()
        self.cuda.synchronize()
