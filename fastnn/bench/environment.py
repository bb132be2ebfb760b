"""What a benchmark ran on: date, CPU, the kernel path Numba compiled, library versions,
the BLAS and its core type, and the measured FMA peak of the kernels' vector type.

Results are only comparable between runs with the same kernel path and BLAS kernel, so
both are recorded with every table (README and RESULTS.md quote them per CPU family).
"""
import importlib
import os
import platform
import time
from dataclasses import dataclass

import numpy as np


def cpu_model():
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def kernel_target():
    """The kernel path Numba compiles for (:mod:`fastnn.kernels.target`), as a dict with
    ``isa``, ``cpu`` (LLVM's name), ``tiles``, vector width and cache sizes, and
    ``path``: the one-line description."""
    try:
        from ..kernels.target import TARGET, describe
    except ImportError as exc:        # a kernels/ tree without target.py
        return {"isa": "unknown", "cpu": "unknown", "path": f"unknown ({exc})"}
    return {"isa": TARGET.isa, "cpu": TARGET.cpu, "path": describe(),
            "vector_bytes": TARGET.vector_bytes, "registers": TARGET.registers,
            "fma": TARGET.fma, "tiles": {name: list(tile) for name, tile in TARGET.tiles().items()},
            "l1d_bytes": TARGET.l1d_bytes, "l2_bytes": TARGET.l2_bytes,
            "triple": TARGET.triple}


def blas_libraries():
    """The BLAS libraries NumPy loaded (threadpoolctl): API, version, core type
    (OpenBLAS's ``architecture``, e.g. ``SkylakeX`` or ``Haswell``) and threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()
            if info.get("user_api") == "blas"]


def blas_info(libraries=None):
    """One line naming the BLAS, e.g. ``openblas 0.3.31 (SkylakeX, 2 threads)``."""
    libraries = blas_libraries() if libraries is None else libraries
    return ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                     f"{b['num_threads']} threads)" for b in libraries) or "unknown"


def _optional_version(module):
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


#: Environment variables that restrict PyTorch (ATen, oneDNN, MKL) and JAX (XLA) to an
#: instruction set, e.g. AVX2 on an AVX-512 machine (see benchmarks/RESULTS.md).
PEER_ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                      "XLA_FLAGS")


def environment():
    """Everything the tables' header and the JSON record about this run (a dict)."""
    import numba
    blas = blas_libraries()
    env = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
           "machine": platform.machine(), "python": platform.python_version(),
           "numpy": np.__version__, "numba": numba.__version__,
           "numba_threads": numba.get_num_threads(),
           "blas": blas_info(blas), "blas_libraries": blas,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
           "NUMBA_CPU_NAME": os.environ.get("NUMBA_CPU_NAME", ""),
           # what pins the peers to one instruction set when another family is emulated
           # (OPENBLAS_CORETYPE for NumPy; these for PyTorch and JAX)
           "peer_isa": {k: os.environ[k] for k in PEER_ISA_VARIABLES if k in os.environ}}
    target = kernel_target()
    env.update(isa=target["isa"], kernel_cpu=target["cpu"], kernel_path=target["path"],
               tiles=target.get("tiles"), kernel_target=target)
    for module in ("torch", "jax", "jaxlib", "threadpoolctl"):
        version = _optional_version(module)
        if version is not None:
            env[module] = version
    return env


@dataclass
class Peak:
    """Measured float32 FMA throughput of one core: ``gflops`` with vectors of ``lanes``
    float32 on kernel path ``isa``."""
    gflops: float
    lanes: int
    isa: str

    def label(self):
        return (f"measured FMA peak with {self.lanes} x float32 ({self.isa}) vectors: "
                f"{self.gflops:.0f} GFLOP/s per core")


def measure_fma_peak(seconds=0.2):
    """The float32 FMA peak of one core, in the SIMD vector type the GEMM uses.

    Twelve independent vector accumulators (enough to hide the FMA latency on every CPU
    seen) each do ``a = a * 1 + 1`` ``n`` times: ``2 * 12 * lanes * n`` FLOPs.  The vector
    type follows the kernel path's width, so "% of peak" compares like with like.
    """
    import numba

    from ..kernels.simd_vectors import lanes, vfma, vsplat, vstore

    @numba.njit
    def fmas(n, x):
        one = vsplat(np.float32(1.0000001))
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = vsplat(x)
        for _ in range(n):
            a0 = vfma(a0, one, one)
            a1 = vfma(a1, one, one)
            a2 = vfma(a2, one, one)
            a3 = vfma(a3, one, one)
            a4 = vfma(a4, one, one)
            a5 = vfma(a5, one, one)
            a6 = vfma(a6, one, one)
            a7 = vfma(a7, one, one)
            a8 = vfma(a8, one, one)
            a9 = vfma(a9, one, one)
            a10 = vfma(a10, one, one)
            a11 = vfma(a11, one, one)
        out = np.empty(64, np.float32)
        # every accumulator feeds the result, so none of the chains is dead code
        vstore(out, 0, vfma(a0, a1, vfma(a2, a3, vfma(a4, a5, vfma(a6, a7, vfma(
            a8, a9, vfma(a10, a11, vsplat(x))))))))
        return lanes(out)

    width = int(fmas(10, np.float32(0)))
    n, best = 1 << 20, 0.0
    while True:
        start = time.perf_counter()
        fmas(n, np.float32(0))
        elapsed = time.perf_counter() - start
        best = max(best, n * 12 * width * 2 / elapsed / 1e9)
        if elapsed > seconds / 4:
            break
        n *= 4
    return Peak(best, width, kernel_target()["isa"])


def fma_peak_gflops(seconds=0.2):
    """GFLOP/s of :func:`measure_fma_peak` alone (the name earlier scripts used)."""
    return measure_fma_peak(seconds).gflops
