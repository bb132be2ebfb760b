"""asv: a whole training step of the 784-512-256-10 MLP, and the first-call cost."""
from fastnn import bench


class TrainingStep:
    params = (bench.BATCHES, ["numba", "numpy"])
    param_names = ["batch", "backend"]

    def setup(self, batch, backend):
        self.fn = bench.training_step_case(batch).run[backend]
        self.fn()

    def time_step(self, batch, backend):
        self.fn()


class TorchStep:
    """PyTorch eager on the same step, when PyTorch is installed (skipped otherwise)."""
    params = bench.BATCHES
    param_names = ["batch"]

    def setup(self, batch):
        try:
            self.fn = bench.torch_step_case(batch)
        except ImportError:
            raise NotImplementedError("PyTorch is not installed")
        self.fn()

    def time_step(self, batch):
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
