"""asv: one training step of an MLP 784-512-256-10 (ReLU, softmax cross-entropy, SGD),
Numba backend against the NumPy/BLAS backend, across batch sizes."""
import numpy as np

import fastnn as fnn

BATCH_SIZES = [1, 32, 128, 512, 2048]
BACKENDS = ["numba", "numpy"]


def _mlp(seed=0):
    return fnn.Sequential(fnn.Linear(784, 512, init="he_normal"), fnn.ReLU(),
                          fnn.Linear(512, 256, init="he_normal"), fnn.ReLU(),
                          fnn.Linear(256, 10), seed=seed)


class TrainingStep:
    params = (BACKENDS, BATCH_SIZES)
    param_names = ["backend", "batch"]

    def setup(self, backend, batch):
        rng = np.random.default_rng(0)
        self.x = rng.random((batch, 784), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)
        self.model = _mlp().to(backend)
        self.loss = fnn.CrossEntropyLoss()
        self.opt = fnn.SGD(self.model.parameters(), lr=0.01, momentum=0.9, backend=backend)
        self.time_step(backend, batch)          # JIT warm-up happens here, not in the timing

    def time_step(self, backend, batch):
        with fnn.use_backend(backend):
            logits = self.model(self.x)
            _, grad = self.loss(logits, self.y)
            self.opt.zero_grad()
            self.model.backward(grad)
            self.opt.step()
