"""asv: scaled dot-product attention (issue 11), float32, (batch, heads, seq, d) =
(8, 8, 512, 64) and (1, 8, 2048, 64), causal and not, forward and forward + backward:
fastnn's kernels, the careful NumPy user (target on forward + backward: fastnn >= 3x) and
PyTorch eager ``F.scaled_dot_product_attention`` with autograd (>= 1.5x; skipped without
PyTorch).  The same cases as ``fastnn bench --only attention``."""
from fastnn import bench

SHAPES = ["8x8x512x64", "1x8x2048x64"]


class Attention:
    params = (["forward", "forward+backward"], SHAPES, [False, True],
              ["fastnn", "numpy", "torch"])
    param_names = ["direction", "shape", "causal", "contender"]
    timeout = 300

    def setup(self, direction, shape, causal, contender):
        case = bench.attention_case(direction, tuple(map(int, shape.split("x"))), causal,
                                    torch=contender == "torch")
        name = "numba" if contender == "fastnn" else contender
        if name not in case.run:
            raise NotImplementedError("PyTorch is not installed")     # asv: skipped
        self.fn = case.run[name]
        self.fn()

    def time_attention(self, direction, shape, causal, contender):
        self.fn()
