"""asv: GEMM layouts, activations, losses, optimiser updates, normalisation, dropout and
embeddings, Numba vs NumPy (Adam also vs PyTorch's foreach Adam)."""
from fastnn import bench
from fastnn.kernels.activations import ACTIVATIONS

BACKENDS = ["numba", "numpy"]
MLP_LAYERS = ["784x512", "512x256", "256x10"]


class GEMM:
    """The three products of a dense layer of the MLP, per batch size."""
    params = (["nn", "nt", "tn"], MLP_LAYERS, bench.BATCHES, BACKENDS)
    param_names = ["layout", "layer", "batch", "backend"]

    def setup(self, layout, layer, batch, backend):
        fan_in, fan_out = map(int, layer.split("x"))
        m, k, n = {"nn": (batch, fan_in, fan_out), "nt": (batch, fan_out, fan_in),
                   "tn": (fan_in, batch, fan_out)}[layout]
        self.fn = bench.gemm_case(layout, m, k, n).run[backend]
        self.fn()

    def time_gemm(self, layout, layer, batch, backend):
        self.fn()


class SquareGEMM:
    params = (["nn", "nt", "tn"], [256, 512, 1024, 2048], BACKENDS)
    param_names = ["layout", "n", "backend"]

    def setup(self, layout, n, backend):
        self.fn = bench.gemm_case(layout, n, n, n).run[backend]
        self.fn()

    def time_gemm(self, layout, n, backend):
        self.fn()


class Dense:
    """The fused dense layer 784->512 with ReLU (bias and activation in the GEMM epilogue;
    backward: activation derivative and bias gradient in one pass, then the two GEMMs)."""
    params = (["forward", "backward"], bench.BATCHES, BACKENDS)
    param_names = ["direction", "batch", "backend"]

    def setup(self, direction, batch, backend):
        self.fn = bench.dense_case(direction, batch).run[backend]
        self.fn()

    def time_dense(self, direction, batch, backend):
        self.fn()


class Activations:
    """Every activation of the registry, forward and backward, on 512x512 and 2048x512."""
    params = (sorted(ACTIVATIONS), ["forward", "backward"], ["512x512", "2048x512"], BACKENDS)
    param_names = ["activation", "direction", "shape", "backend"]

    def setup(self, name, direction, shape, backend):
        rows, cols = map(int, shape.split("x"))
        self.fn = bench.activation_case(name, direction, (rows, cols)).run[backend]
        self.fn()

    def time_activation(self, name, direction, shape, backend):
        self.fn()


class Losses:
    params = (["softmax_xent", "softmax_xent_soft", "bce_logits", "mse"], bench.BATCHES,
              BACKENDS)
    param_names = ["loss", "batch", "backend"]

    def setup(self, loss, batch, backend):
        self.fn = bench.loss_case(loss, batch).run[backend]
        self.fn()

    def time_loss(self, loss, batch, backend):
        self.fn()


class Optimizers:
    params = ([False, True], [512, 784 * 512], BACKENDS)
    param_names = ["momentum", "size", "backend"]

    def setup(self, momentum, size, backend):
        self.fn = bench.optimizer_case(momentum, size).run[backend]
        self.fn()

    def time_update(self, momentum, size, backend):
        self.fn()


class AdamUpdate:
    """One Adam step on a 784x512 float32 parameter: fastnn.Adam.step() (one fused
    kernel), the careful NumPy user's Adam (issue 10 target: fastnn >= 3x) and
    torch.optim.Adam(foreach=True) (>= 1.5x; skipped without PyTorch)."""
    params = (["fastnn", "numpy", "torch"],)
    param_names = ["contender"]

    def setup(self, contender):
        case = bench.adam_case(torch=contender == "torch")
        name = "numba" if contender == "fastnn" else contender
        if name not in case.run:
            raise NotImplementedError("PyTorch is not installed")     # asv: skipped
        self.fn = case.run[name]
        self.fn()

    def time_adam(self, contender):
        self.fn()


class Normalization:
    """BatchNorm1d (training) and LayerNorm, forward + backward at (2048, 512) float32:
    fastnn's kernels, the careful NumPy user (issue 10 target: fastnn >= 2x) and
    torch.nn.functional with autograd (>= 1.2x; skipped without PyTorch)."""
    params = (["batch_norm", "layer_norm"], ["fastnn", "numpy", "torch"])
    param_names = ["layer", "contender"]

    def setup(self, kind, contender):
        case = bench.norm_case(kind, torch=contender == "torch")
        name = "numba" if contender == "fastnn" else contender
        if name not in case.run:
            raise NotImplementedError("PyTorch is not installed")     # asv: skipped
        self.fn = case.run[name]
        self.fn()

    def time_forward_backward(self, kind, contender):
        self.fn()


class Dropout:
    """Inverted dropout (p = 0.5), forward + backward at (2048, 512) float32: fastnn's
    counter-based kernels, NumPy's generator (target: fastnn >= 3x), PyTorch."""
    params = (["fastnn", "numpy", "torch"],)
    param_names = ["contender"]

    def setup(self, contender):
        case = bench.dropout_case(torch=contender == "torch")
        name = "numba" if contender == "fastnn" else contender
        if name not in case.run:
            raise NotImplementedError("PyTorch is not installed")     # asv: skipped
        self.fn = case.run[name]
        self.fn()

    def time_forward_backward(self, contender):
        self.fn()


class Embedding:
    """Embedding lookup and table gradient: (32, 128) token ids into a (10000, 256)
    float32 table; fastnn's kernels against fancy indexing and np.add.at (issue 11
    target: backward >= 3x)."""
    params = (["forward", "backward", "forward+backward"], BACKENDS)
    param_names = ["direction", "backend"]

    def setup(self, direction, backend):
        self.fn = bench.embedding_case(direction).run[backend]
        self.fn()

    def time_embedding(self, direction, backend):
        self.fn()
