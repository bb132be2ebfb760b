"""``fastnn bench``: every performance target, measured the way users feel it.

- :mod:`.timing`: block means (what an epoch costs) over alternating blocks of calls,
  with the median of single calls kept beside them.
- :mod:`.numpy_step`: the training step a careful NumPy user writes, the baseline of the
  training targets; :mod:`.steps`: the step of every contender (fastnn, that NumPy
  step, fastnn's NumPy backend, PyTorch eager, JAX jit), and of fastnn and PyTorch on the
  network with BatchNorm + dropout hidden layers ("fastnn-bn", "torch-bn").
- :mod:`.cases`: the kernel cases (GEMM, dense layer, activations, loss, optimiser,
  normalisation, dropout, embedding), shared with the asv suites and the pytest-benchmark tests;
  :mod:`.optimizers`: the Adam baselines (a careful NumPy user's, PyTorch's foreach
  Adam); :mod:`.norm_baselines`: the normalisation and dropout baselines (a careful NumPy
  user's, PyTorch's functional ops with autograd); :mod:`.attention_cases`: the attention
  case and its baselines (a careful NumPy user's, PyTorch's scaled_dot_product_attention).
- :mod:`.isolated`: one contender timed in a process of its own.
- :mod:`.sections`: one table each (``fastnn bench --only training,training-bn``);
  :mod:`.environment`: CPU, kernel path, libraries, FMA peak; :mod:`.report`: the rows,
  Markdown and JSON; :mod:`.runner`: the command.
"""
from .attention_cases import NumpyAttention, TorchAttention, attention_case
from .cases import (BATCHES, NORM_SHAPE, Case, activation_case, adam_case, dense_case,
                    dropout_case, embedding_case, gemm_case, gemm_cases, loss_case, norm_case,
                    optimizer_case,
                    torch_step_case, training_step_case)
from .environment import environment, fma_peak_gflops, measure_fma_peak
from .numpy_step import NumpyMLPStep
from .report import Result, to_markdown
from .runner import add_arguments, run, run_from_args
from .sections import SECTIONS, compile_times
from .steps import (MLP_WIDTHS, FastnnStep, HandwrittenNumpyStep, JaxStep, TorchStep,
                    make_contender, mlp)
from .timing import Contender, Timing, compare, interleave

__all__ = [
    "attention_case", "NumpyAttention", "TorchAttention",
    "BATCHES", "Case", "Contender", "FastnnStep", "HandwrittenNumpyStep", "JaxStep",
    "MLP_WIDTHS", "NumpyMLPStep", "Result", "SECTIONS", "Timing", "TorchStep",
    "activation_case", "adam_case", "add_arguments", "compare", "compile_times", "dense_case",
    "environment", "fma_peak_gflops", "gemm_case", "gemm_cases", "interleave", "loss_case", "make_contender",
    "measure_fma_peak", "mlp", "NORM_SHAPE", "dropout_case", "norm_case", "optimizer_case",
    "embedding_case",
    "run", "run_from_args", "to_markdown",
    "torch_step_case", "training_step_case",
]
