"""model.export_onnx: every layer and activation exported, run with onnxruntime on random
inputs at two batch sizes (and two sequence lengths), compared with the model itself in
evaluation mode."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fnn
from fastnn.module import Module

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

#: (rtol, atol) against model(x): float32 to its rounding, float64 much tighter.  The
#: atol covers outputs near 0 (softmax tails, GELU's negative tail, where the exported
#: erf form and fastnn's erfc form differ by a rounding of ~1).
TOLERANCE = {np.float32: (1e-5, 2e-6), np.float64: (1e-10, 1e-12)}


def _session(model, path, **kwargs):
    proto = model.export_onnx(path, **kwargs)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return proto, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_export(model, inputs, tmp_path, **kwargs):
    """Export ``model``, run each input with onnxruntime and compare with the model in
    evaluation mode (to :data:`TOLERANCE`); returns the ModelProto."""
    dtype = model.dtype.type
    proto, session = _session(model, tmp_path / "model.onnx", **kwargs)
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.shape[0] == "batch"
    was_training = model.training
    model.eval()
    rtol, atol = TOLERANCE[dtype]
    for x in inputs:
        (y,) = session.run(None, {graph_input.name: x})
        expected = np.asarray(model(x))
        assert y.dtype == expected.dtype == dtype
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=rtol, atol=atol)
    model.train(was_training)
    return proto


def features(rng, dtype, *shape):
    return rng.normal(0.0, 1.5, size=shape).astype(dtype)


def two_batches(rng, dtype, *inner):
    return [features(rng, dtype, 3, *inner), features(rng, dtype, 8, *inner)]


# ---------------------------------------------------------------------- activations
#: Parameters that differ from the defaults, so that each is seen in the graph.
PARAMS = {"sigmoid": {"beta": 2.5}, "leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7},
          "piecewise_linear": {"x_min": -1.0, "x_max": 2.0}}


@pytest.mark.parametrize("name", sorted(fnn.ACTIVATIONS))
def test_every_activation(name, dtype, rng, tmp_path):
    """Every name of the registry exports (a new activation fails here until it has an
    entry in fastnn.onnx_export.ACTIVATIONS) and matches the kernels."""
    model = fnn.Sequential(fnn.Linear(5, 7), fnn.Activation(name, **PARAMS.get(name, {})),
                           dtype=dtype, seed=1)
    check_export(model, two_batches(rng, dtype, 5), tmp_path)


@pytest.mark.parametrize("layer", [fnn.Sigmoid(), fnn.LeakyReLU(), fnn.ELU(), fnn.GELU(),
                                   fnn.PiecewiseLinear(), fnn.Softmax()], ids=repr)
def test_named_activation_layers_default_parameters(layer, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(4, 6), layer, dtype="float64", seed=2)
    check_export(model, two_batches(rng, np.float64, 4), tmp_path)


def test_activation_on_sequences(dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(4, 6), fnn.Softmax(), dtype=dtype, seed=3)
    check_export(model, two_batches(rng, dtype, 5, 4), tmp_path,
                 input_shape=(None, None, 4))


def test_gelu_operator_at_opset_20(dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(5, 7), fnn.GELU(), dtype=dtype, seed=4)
    proto = check_export(model, two_batches(rng, dtype, 5), tmp_path, opset=20)
    ops = {n.op_type for n in proto.graph.node}
    # float64: erfc from elementary operators (onnxruntime has neither a float64 Gelu nor Erf)
    assert ("Gelu" in ops) == (dtype == np.float32) and "Erf" not in ops
    assert proto.opset_import[0].version == 20


def test_gelu_float64_to_the_tails(tmp_path):
    """onnxruntime has no float64 Erf: the exported erfc (series below |z| = 2.5, continued
    fraction above) matches fastnn's to ~1e-12, relative, across the range, the far negative
    tail (values ~1e-300) included."""
    model = fnn.Sequential(fnn.GELU(), dtype="float64")
    x = np.concatenate([np.linspace(-37.0, 12.0, 4001), [-3.5355, -3.5356, 3.5355, 0.0,
                                                        1e-300, -1e-300, 40.0, -40.0]])
    _, session = _session(model, tmp_path / "gelu.onnx", input_shape=(None, 1))
    y = session.run(None, {"input": x[:, None]})[0]
    np.testing.assert_allclose(y, model(x[:, None]), rtol=2e-12, atol=0)


@pytest.mark.parametrize("opset", [18, 21])
def test_later_opsets(opset, dtype, rng, tmp_path):
    """ReduceMean's axes become an input at opset 18 (MeanPool, LayerNorm and BatchNorm1d
    written with elementary operators); opset 21 needs IR version 10."""
    model = fnn.Sequential(fnn.Linear(5, 8), fnn.LayerNorm(8, eps=1e-3), fnn.GELU(),
                           fnn.BatchNorm1d(8, track_running_stats=False), fnn.MeanPool(),
                           dtype=dtype, seed=21)
    _randomise(model, rng)
    proto = check_export(model, two_batches(rng, dtype, 6, 5), tmp_path,
                         input_shape=(None, None, 5), opset=opset)
    assert proto.opset_import[0].version == opset


def test_step_edges(tmp_path):
    """0 -> 1 (x >= 0) and the piecewise-linear corners, exactly."""
    model = fnn.Sequential(fnn.Step(), dtype="float32")
    x = np.array([[-1.0, 0.0, 1e-30, -1e-30, 5.0]], np.float32)
    _, session = _session(model, tmp_path / "step.onnx", input_shape=(None, 5))
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], model(x))
    model = fnn.Sequential(fnn.PiecewiseLinear(-0.3, 0.7), dtype="float32")
    x = np.array([[-0.3, 0.7, 0.2, -5.0, 5.0, 0.69999]], np.float32)
    _, session = _session(model, tmp_path / "pl.onnx", input_shape=(None, 6))
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(x), rtol=1e-6,
                               atol=0)


# ---------------------------------------------------------------------- layers
def test_linear_gemm_and_no_bias(dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(6, 9), fnn.Tanh(), fnn.Linear(9, 4, bias=False),
                           dtype=dtype, seed=5)
    proto = check_export(model, two_batches(rng, dtype, 6), tmp_path)
    assert [n.op_type for n in proto.graph.node].count("Gemm") == 2


def test_linear_on_sequences(dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(6, 9), fnn.ReLU(), fnn.Linear(9, 4, bias=False),
                           dtype=dtype, seed=6)
    proto = check_export(model, two_batches(rng, dtype, 5, 6) + [features(rng, dtype, 2, 11, 6)],
                         tmp_path, input_shape=(None, None, 6))
    assert {n.op_type for n in proto.graph.node} >= {"MatMul", "Add"}
    assert [d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim[:2]] == \
        ["batch", "seq"]


def _randomise(model, rng):
    """Random parameters and float buffers (non-trivial LayerNorm/BatchNorm affines,
    running variances > 0)."""
    state = {}
    for name, value in model.state_dict().items():
        if value.dtype.kind != "f":
            state[name] = value
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        else:
            state[name] = rng.normal(0.0, 0.5, value.shape).astype(value.dtype)
    return model.load_state_dict(state)


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False},
                                    {"eps": 1e-3}], ids=str)
def test_layer_norm(kwargs, dtype, rng, tmp_path):
    model = _randomise(fnn.Sequential(fnn.Linear(5, 8), fnn.LayerNorm(8, **kwargs),
                                      dtype=dtype, seed=7), rng)
    check_export(model, two_batches(rng, dtype, 5), tmp_path)


@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"eps": 1e-3}], ids=str)
@pytest.mark.parametrize("rank", [2, 3])
def test_batch_norm_running_statistics(kwargs, rank, dtype, rng, tmp_path):
    """Evaluation mode: the running statistics, on the last axis (ONNX's channel axis 1
    for 2-D input; transposed there and back for 3-D)."""
    model = fnn.Sequential(fnn.Linear(5, 8), fnn.BatchNorm1d(8, **kwargs), dtype=dtype,
                           seed=8)
    _randomise(model, rng)
    inner = (5,) if rank == 2 else (4, 5)
    for x in two_batches(rng, dtype, *inner):       # training mode: moves the statistics
        model(x)
    shape = (None, 5) if rank == 2 else (None, None, 5)
    check_export(model, two_batches(rng, dtype, *inner), tmp_path, input_shape=shape)


def test_batch_norm_without_running_statistics(dtype, rng, tmp_path):
    model = _randomise(fnn.Sequential(fnn.Linear(5, 8),
                                      fnn.BatchNorm1d(8, track_running_stats=False),
                                      dtype=dtype, seed=9), rng)
    check_export(model, two_batches(rng, dtype, 4, 5), tmp_path, input_shape=(None, None, 5))


def test_dropout_is_the_identity(dtype, rng, tmp_path):
    """The export is the model in evaluation mode, even from a model in training mode
    (which it leaves in training mode)."""
    model = fnn.Sequential(fnn.Linear(5, 8), fnn.ReLU(), fnn.Dropout(0.5), fnn.Linear(8, 3),
                           dtype=dtype, seed=10)
    assert model.training
    proto = check_export(model, two_batches(rng, dtype, 5), tmp_path)
    assert model.training
    assert "Dropout" not in {n.op_type for n in proto.graph.node}


def test_residual_and_nested_sequential(dtype, rng, tmp_path):
    block = fnn.Sequential(fnn.Linear(6, 10), fnn.GELU(), fnn.Linear(10, 6))
    model = fnn.Sequential(fnn.Linear(4, 6), fnn.Residual(block), fnn.LayerNorm(6),
                           fnn.Residual(fnn.ELU(0.5)), dtype=dtype, seed=11)
    proto = check_export(model, two_batches(rng, dtype, 4), tmp_path)
    names = {i.name for i in proto.graph.initializer}
    assert {"1.module.0.weight", "1.module.2.bias", "2.weight"} <= names   # state_dict names


def _ids(rng, vocab, *shape):
    return rng.integers(0, vocab, size=shape)


@pytest.mark.parametrize("pool", ["mean", "first"])
def test_embedding_positions_and_pooling(pool, dtype, rng, tmp_path):
    pooling = fnn.MeanPool() if pool == "mean" else fnn.FirstToken()
    model = fnn.Sequential(fnn.Embedding(13, 8, padding_idx=0), fnn.PositionalEmbedding(12, 8),
                           pooling, fnn.Linear(8, 3), dtype=dtype, seed=12)
    _randomise(model, rng)
    proto = check_export(model, [_ids(rng, 13, 3, 5), _ids(rng, 13, 7, 12)], tmp_path)
    (graph_input,) = proto.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch", "seq"]


def test_sinusoidal_encoding_and_mean_pool_other_axis(dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(3, 6), fnn.SinusoidalPositionalEncoding(6, max_len=40),
                           fnn.MeanPool(axis=-1), dtype=dtype, seed=13)
    check_export(model, two_batches(rng, dtype, 5, 3) + [features(rng, dtype, 2, 40, 3)],
                 tmp_path)


def test_fixed_sequence_length(rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.PositionalEmbedding(10, 4), fnn.FirstToken(),
                           seed=14)
    proto = check_export(model, two_batches(rng, np.float32, 6, 3), tmp_path,
                         input_shape=(None, 6, 3))
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 6


# ---------------------------------------------------------------------- attention
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_multi_head_attention(causal, dtype, rng, tmp_path):
    model = fnn.Sequential(fnn.MultiHeadAttention(12, 3, causal=causal), dtype=dtype, seed=15)
    _randomise(model, rng)
    check_export(model, two_batches(rng, dtype, 5, 12) + [features(rng, dtype, 2, 1, 12)],
                 tmp_path)


def test_causal_attention_ignores_later_positions(rng, tmp_path):
    model = fnn.Sequential(fnn.MultiHeadAttention(8, 2, causal=True), seed=16)
    _, session = _session(model, tmp_path / "causal.onnx")
    x = features(rng, np.float32, 2, 6, 8)
    changed = x.copy()
    changed[:, 4:] = features(rng, np.float32, 2, 2, 8)
    a, b = (session.run(None, {"input": v})[0] for v in (x, changed))
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_transformer_on_token_ids(causal, norm_first, dtype, rng, tmp_path):
    model = fnn.Sequential(
        fnn.Embedding(20, 16), fnn.SinusoidalPositionalEncoding(16, max_len=64),
        fnn.TransformerEncoderLayer(16, 4, ff_dim=24, dropout=0.1, activation="gelu",
                                    norm_first=norm_first, causal=causal),
        fnn.TransformerEncoderLayer(16, 2, ff_dim=20, causal=causal),
        fnn.MeanPool(), fnn.Linear(16, 5), dtype=dtype, seed=17)
    _randomise(model, rng)
    check_export(model, [_ids(rng, 20, 3, 7), _ids(rng, 20, 6, 13)], tmp_path)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_transformer_on_features(causal, dtype, rng, tmp_path):
    model = fnn.Sequential(
        fnn.Linear(5, 12), fnn.PositionalEmbedding(32, 12),
        fnn.TransformerEncoderLayer(12, 3, ff_dim=16, activation="relu", causal=causal),
        fnn.BatchNorm1d(12), fnn.FirstToken(), fnn.Linear(12, 2), dtype=dtype, seed=18)
    _randomise(model, rng)
    proto = check_export(model, two_batches(rng, dtype, 9, 5) + [features(rng, dtype, 4, 2, 5)],
                         tmp_path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "seq", 5]


# ---------------------------------------------------------------------- files and errors
def test_loaded_model(rng, tmp_path):
    model = fnn.Sequential(fnn.Linear(6, 10), fnn.BatchNorm1d(10), fnn.LeakyReLU(0.1),
                           fnn.Dropout(0.2), fnn.Linear(10, 3), seed=19)
    model.compile(optimizer=fnn.Adam(lr=1e-2), loss="cross_entropy")
    x = features(rng, np.float32, 64, 6)
    model.fit(x, rng.integers(0, 3, 64), epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "model.fnn")
    loaded = fnn.load(tmp_path / "model.fnn")
    check_export(loaded, two_batches(rng, np.float32, 6), tmp_path)
    model.eval()
    _, session = _session(loaded, tmp_path / "again.onnx")
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model(x), rtol=1e-5,
                               atol=2e-6)


class Doubler(Module):
    """A layer of the user's own, with no ONNX export."""

    def _forward(self, x, backend):
        return x * 2

    def _backward(self, grad, backend, need_input_grad):
        return grad * 2


class SquaredLinear(fnn.Linear):
    """A Linear subclass that changes the forward pass: the Linear export would be wrong."""

    def _forward(self, x, backend, activation=None):
        return super()._forward(x, backend) ** 2


@pytest.mark.parametrize("make", [Doubler, lambda: SquaredLinear(4, 4)],
                         ids=["own layer", "Linear subclass with its own forward"])
def test_unsupported_layer_names_it(make, tmp_path):
    layer = make()
    model = fnn.Sequential(fnn.Linear(4, 4), fnn.Residual(fnn.Sequential(layer)))
    name = type(layer).__name__
    with pytest.raises(NotImplementedError, match=rf"{name} \(layer '1.module.0'\) has no ONNX"):
        model.export_onnx(tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_own_layer_registers_its_export(rng, tmp_path):
    from fastnn import onnx_export

    class Tripler(Doubler):
        def _forward(self, x, backend):
            return x * 3

    @onnx_export.exports(Tripler)
    def _tripler(graph, module, x):
        return graph.node("Mul", [x.name, graph.const(3.0)])

    try:
        model = fnn.Sequential(fnn.Linear(4, 5), Tripler(), seed=20)
        check_export(model, two_batches(rng, np.float32, 4), tmp_path)
    finally:
        del onnx_export.EXPORTERS[Tripler]


def test_bad_arguments(tmp_path):
    attention = fnn.Sequential(fnn.MultiHeadAttention(8, 2))
    with pytest.raises(ValueError, match=r"MultiHeadAttention .* needs \(batch, seq, features\)"):
        attention.export_onnx(tmp_path / "m.onnx", input_shape=(None, 8))
    with pytest.raises(ValueError, match="opset must be between 17"):
        attention.export_onnx(tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match="input_shape"):
        attention.export_onnx(tmp_path / "m.onnx", input_shape=(None, 0, 8))
    with pytest.raises(ValueError, match="positive ints or None"):
        attention.export_onnx(tmp_path / "m.onnx", input_shape=("batch", None, 8))
    with pytest.raises(ValueError, match="the model takes 8 features"):
        attention.export_onnx(tmp_path / "m.onnx", input_shape=(None, None, 5))
    with pytest.raises(ValueError, match="input width"):
        fnn.Sequential(fnn.ReLU()).export_onnx(tmp_path / "m.onnx")


def _python(code):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_import_fastnn_does_not_import_onnx():
    out = _python("""
        import sys
        import fastnn
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime'))
        assert not loaded, loaded
        print("ok")
        """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_without_onnx_the_error_says_how_to_install(tmp_path):
    out = _python(f"""
        import sys
        sys.modules["onnx"] = None          # as if it were not installed
        import fastnn as fnn
        model = fnn.Sequential(fnn.Linear(3, 2))
        try:
            model.export_onnx({str(tmp_path / "m.onnx")!r})
        except ImportError as exc:
            print(exc)
        """)
    assert out.returncode == 0, out.stderr
    assert 'pip install "fastnn[onnx]"' in out.stdout
