"""An activation is one record: its formulas, written once in
``kernels/activation_specs.py``, drive every kernel (CPU element-wise, GEMM epilogue,
fused dense backward, CUDA) and its NumPy reference drives the reference backend.

The proof: a copy of the package in which *only* ``activation_specs.py`` is edited, to add
softsign, runs softsign everywhere (in a fresh interpreter with its own Numba cache).
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastnn
from fastnn.kernels import activation_specs
from fastnn.kernels.activation_specs import ELEMENTWISE, PRIMITIVES

PACKAGE = Path(fastnn.__file__).parent
KERNELS = Path(activation_specs.__file__).parent

# What a contributor writes to add softsign: its formulas, its NumPy reference and its
# record, in activation_specs.py -- nothing anywhere else.
SOFTSIGN = '''
# --------------------------------------------------------------------------- softsign
def _softsign(v, p0, p1):
    return v / (like(v, 1.0) + abs(v))


def _softsign_grad(d, x, y, p0, p1):
    s = like(x, 1.0) + abs(x)
    return d / (s * s)


def _softsign_grad_y(d, y, p0, p1):
    t = like(y, 1.0) - abs(y)                   # 1 - |y| = 1 / (1 + |x|)
    return d * (t * t)


def _softsign_ref(x, out):
    out[...] = x / (1 + np.abs(x))
    return out


def _softsign_ref_grad(dy, x, y, out):
    out[...] = dy / (1 + np.abs(x)) ** 2
    return out


SOFTSIGN = ActivationSpec(
    "softsign", code=11, forward=_softsign, backward=_softsign_grad,
    grad_from_output=_softsign_grad_y, reference_forward=_softsign_ref,
    reference_backward=_softsign_ref_grad,
    reference_grad_from_output=lambda y, p: (1 - np.abs(y)) ** 2,
    doc="f(x) = x / (1 + |x|)")

'''

_CHECK_CPU = """
    import json, os, tempfile
    import numpy as np
    import fastnn as fnn
    from fastnn.backends import get_backend
    assert "softsign" in fnn.kernels.activation_specs.ACTIVATIONS
    rng = np.random.default_rng(0)
    report = {}
    numba_be, numpy_be = get_backend("numba"), get_backend("numpy")
    for dtype in (np.float32, np.float64):
        x = (2 * rng.standard_normal((37, 129))).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        y = numba_be.softsign_forward(x, np.empty_like(x))
        g = numba_be.softsign_backward(dy, x, y, np.empty_like(x))
        y_ref = numpy_be.softsign_forward(x.astype(float), np.empty(x.shape))
        g_ref = numpy_be.softsign_backward(dy.astype(float), x.astype(float), y_ref,
                                           np.empty(x.shape))
        assert y.dtype == dtype and g.dtype == dtype
        report[f"elementwise {np.dtype(dtype).name}"] = [float(abs(y - y_ref).max()),
                                                          float(abs(g - g_ref).max())]
    # the derivative against central differences (float64)
    x = rng.standard_normal((4, 6)); w = rng.standard_normal((4, 6)); h = 1e-6
    def loss(z):
        return float((w * numba_be.softsign_forward(z, np.empty_like(z))).sum())
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x); e[i] = h
        numeric[i] = (loss(x + e) - loss(x - e)) / (2 * h)
    analytic = numba_be.softsign_backward(w, x, numba_be.softsign_forward(x, np.empty_like(x)),
                                          np.empty_like(x))
    report["finite differences"] = float(abs(analytic - numeric).max())
    # a model with a fused Linear + softsign layer: forward, backward, against NumPy
    act = fnn.Activation("softsign")
    assert act.fusable
    model = fnn.Sequential(fnn.Linear(13, 7), act, fnn.Linear(7, 3), dtype="float64")
    xb = rng.standard_normal((11, 13))
    out = model(xb).copy()
    model.zero_grad()
    model.backward(np.ones_like(out))
    grads = [p.grad.copy() for p in model.parameters()]
    with fnn.use_backend("numpy"):
        model.zero_grad()
        ref = model(xb).copy()
        model.backward(np.ones_like(ref))
        ref_grads = [p.grad.copy() for p in model.parameters()]
    report["fused model"] = [float(abs(out - ref).max())] + [
        float(abs(a - b).max()) for a, b in zip(grads, ref_grads)]
    # save and load
    path = os.path.join(tempfile.mkdtemp(), "model.fnn")
    model.save(path)
    again = fnn.load(path)
    report["save/load"] = float(abs(again(xb) - model(xb)).max())
    print(json.dumps(report))
"""

_CHECK_CUDA = """
    import json
    import numpy as np
    from numba import cuda
    from fastnn.kernels.cuda import activations, dense
    from fastnn.kernels.activation_specs import EPILOGUE_CODES
    from fastnn.backends import numpy_ops
    rng = np.random.default_rng(1)
    x = (2 * rng.standard_normal((3, 37))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y_ref = numpy_ops.softsign_forward(x.astype(float), np.empty(x.shape))
    g_ref = numpy_ops.softsign_backward(dy.astype(float), x.astype(float), y_ref,
                                        np.empty(x.shape))
    d_x, d_dy = cuda.to_device(x), cuda.to_device(dy)
    d_y = activations.softsign_forward(d_x, cuda.device_array_like(x))
    d_g = activations.softsign_backward(d_dy, d_x, d_y, cuda.device_array_like(x))
    d_dz = cuda.device_array_like(x)
    d_db = cuda.device_array(x.shape[1], np.float32)
    dense.act_bias_grad(d_dy, d_y, d_dz, d_db, EPILOGUE_CODES["softsign"], 0.0, 0.0, False)
    fused = dense.bias_act(d_x, cuda.device_array(0, np.float32), cuda.device_array_like(x),
                           EPILOGUE_CODES["softsign"])
    print(json.dumps({"forward": float(abs(d_y.copy_to_host() - y_ref).max()),
                      "backward": float(abs(d_g.copy_to_host() - g_ref).max()),
                      "from output": float(abs(d_dz.copy_to_host() - g_ref).max()),
                      "epilogue": float(abs(fused.copy_to_host() - y_ref).max())}))
"""


def _run(code, root, env_extra):
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    env.update(PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(root / "cache"), **env_extra)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _copy_package(root):
    """The package as installed (fastnn/ with kernels/ as fastnn/kernels), no caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    shutil.copytree(PACKAGE, root / "fastnn", ignore=ignore)
    shutil.rmtree(root / "fastnn" / "kernels", ignore_errors=True)
    shutil.copytree(KERNELS, root / "fastnn" / "kernels", ignore=ignore)


def _changed_files(left, right):
    """Relative paths of the files that differ between two trees."""
    changed = []
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    stack = [(cmp, Path())]
    while stack:
        node, rel = stack.pop()
        changed += [str(rel / n) for n in node.diff_files + node.left_only + node.right_only]
        stack += [(sub, rel / name) for name, sub in node.subdirs.items()]
    return changed


def test_formulas_use_only_the_primitives():
    """Every formula can be compiled for every target: it calls only the primitives (and
    ``abs``), never another formula or a module global."""
    for spec in ELEMENTWISE:
        for formula in (spec.forward, spec.backward, spec.grad_from_output):
            if formula is None:
                continue
            names = set(formula.__code__.co_names)
            assert names <= set(PRIMITIVES) | {"abs"}, (spec.name, formula.__name__, names)
            assert formula.__code__.co_argcount == {spec.forward: 3, spec.backward: 5}.get(
                formula, 4), (spec.name, formula.__name__)


def test_every_record_is_complete():
    for spec in ELEMENTWISE:
        assert spec.reference_forward and spec.reference_backward, spec.name
        assert (spec.grad_from_output is None) == (spec.reference_grad_from_output is None)
        assert len(spec.params) <= 2, spec.name


@pytest.mark.slow
def test_a_new_activation_is_one_edit_of_one_file(tmp_path):
    original, edited = tmp_path / "original", tmp_path / "edited"
    _copy_package(original)
    _copy_package(edited)
    specs = edited / "fastnn" / "kernels" / "activation_specs.py"
    text = specs.read_text()
    marker = "# --------------------------------------------------------------------------- softmax"
    assert marker in text and "GAUSSIAN, STEP, SOFTMAX)" in text
    text = text.replace(marker, SOFTSIGN + marker)
    specs.write_text(text.replace("GAUSSIAN, STEP, SOFTMAX)", "GAUSSIAN, STEP, SOFTMAX, SOFTSIGN)"))
    assert _changed_files(original, edited) == [str(Path("fastnn/kernels/activation_specs.py"))]

    cpu = _run(_CHECK_CPU, edited, {})
    for dtype, tol in (("float32", 1e-6), ("float64", 1e-14)):
        assert max(cpu[f"elementwise {dtype}"]) < tol, cpu
    assert cpu["finite differences"] < 1e-7, cpu
    assert max(cpu["fused model"]) < 1e-12, cpu
    assert cpu["save/load"] == 0.0, cpu

    gpu = _run(_CHECK_CUDA, edited, {"NUMBA_ENABLE_CUDASIM": "1"})
    assert max(gpu.values()) < 1e-6, gpu
