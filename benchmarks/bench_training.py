"""asv: a whole training step of the 784-512-256-10 MLP, per contender, and the first-call
cost.  The steps are the ones ``fastnn bench`` races (:mod:`fastnn.bench.steps`)."""
from fastnn import bench


class TrainingStep:
    """fastnn's step on its Numba backend and on its own NumPy backend."""
    params = (bench.BATCHES, ["numba", "numpy"])
    param_names = ["batch", "backend"]

    def setup(self, batch, backend):
        self.fn = bench.training_step_case(batch).run[backend]
        self.fn()

    def time_step(self, batch, backend):
        self.fn()


class HandwrittenNumpyStep:
    """The careful NumPy user's step (preallocated, in place): the training targets'
    baseline."""
    params = bench.BATCHES
    param_names = ["batch"]

    def setup(self, batch):
        self.fn = bench.HandwrittenNumpyStep(batch)
        self.fn()

    def time_step(self, batch):
        self.fn()


class _OptionalStep:
    """A third-party contender's step, skipped (NotImplementedError) when its library
    is not installed."""
    contender = None
    params = bench.BATCHES
    param_names = ["batch"]

    def setup(self, batch):
        try:
            self.fn = bench.make_contender(self.contender, batch).fn
        except ImportError:
            raise NotImplementedError(f"{self.contender} is not installed")
        self.fn()               # JIT compilation (jax) and first-touch, outside the timing

    def time_step(self, batch):
        self.fn()


class TorchStep(_OptionalStep):
    """PyTorch eager on the same step, when PyTorch is installed."""
    contender = "torch"


class JaxStep(_OptionalStep):
    """``jax.jit`` of the same step, when JAX is installed."""
    contender = "jax"


class AdamTrainingStep:
    """The same step with Adam (PyTorch's defaults, lr 1e-3): fastnn, and PyTorch eager's
    torch.optim.Adam (skipped without PyTorch)."""
    params = ([32, 128, 2048], ["fastnn", "torch"])
    param_names = ["batch", "contender"]

    def setup(self, batch, contender):
        if contender == "fastnn":
            self.fn = bench.FastnnStep(batch, "numba", optimizer="adam")
        else:
            try:
                self.fn = bench.TorchStep(batch, optimizer="adam")
            except ImportError:
                raise NotImplementedError("PyTorch is not installed")
        self.fn()

    def time_step(self, batch, contender):
        self.fn()


class BatchNormDropoutTrainingStep:
    """The step of the network whose hidden layers are Linear(bias=False) -> BatchNorm1d
    -> ReLU -> Dropout(0.2), training mode, SGD with momentum 0.9: fastnn, and PyTorch
    eager with the same modules (skipped without PyTorch); fastnn bench's training-bn."""
    params = ([32, 128, 2048], ["fastnn", "torch"])
    param_names = ["batch", "contender"]

    def setup(self, batch, contender):
        try:
            self.fn = bench.make_contender(f"{contender}-bn", batch).fn
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        self.fn()

    def time_step(self, batch, contender):
        self.fn()


class TransformerTrainingStep:
    """The step of ``fastnn train --model transformer`` (MNIST rows as 28 tokens, two
    encoder layers of width 64, Adam) at its batch of 128: fastnn, and PyTorch eager from
    the same weights (skipped without PyTorch); fastnn bench's training-transformer."""
    params = (["fastnn", "torch"],)
    param_names = ["contender"]

    def setup(self, contender):
        try:
            self.fn = bench.make_contender(f"{contender}-transformer", 128).fn
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        self.fn()

    def time_step(self, contender):
        self.fn()


class FirstCall:
    """Seconds from a fresh interpreter to the end of the first training step."""
    timeout = 600

    def setup_cache(self):
        return bench.compile_times()

    def track_cold_cache_seconds(self, times):
        return times["cold"]

    def track_warm_cache_seconds(self, times):
        return times["warm"]

    track_cold_cache_seconds.unit = "seconds"
    track_warm_cache_seconds.unit = "seconds"
