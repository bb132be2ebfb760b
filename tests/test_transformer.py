"""MultiHeadAttention and TransformerEncoderLayer against formulas written out here
(materialised softmax), finite differences, the PyTorch weight-layout mapping, modes and
saving."""
import numpy as np
import pytest

import fastnn as fnn
from gradcheck import central_differences
from fastnn.transformer import MultiHeadAttention, TransformerEncoderLayer

BACKENDS = ["numba", "numpy"]


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mha_reference(x, mha, causal=False):
    """softmax(q k^T / sqrt(d)) v per head, with the layer's weights (x @ W + b)."""
    b, s, e = x.shape
    h, d = mha.num_heads, mha.head_dim
    w_in, w_out = mha.in_proj.weight.data, mha.out_proj.weight.data
    b_in = mha.in_proj.bias.data if mha.in_proj.bias is not None else 0
    b_out = mha.out_proj.bias.data if mha.out_proj.bias is not None else 0
    qkv = x @ w_in + b_in
    q, k, v = (qkv[..., i * e:(i + 1) * e].reshape(b, s, h, d).transpose(0, 2, 1, 3)
               for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        scores = np.where(np.tril(np.ones((s, s), bool)), scores, -np.inf)
    o = _softmax(scores) @ v
    return o.transpose(0, 2, 1, 3).reshape(b, s, e) @ w_out + b_out


def _fd(model, x, rng, params, h=1e-6):
    """A sample (the first 40 entries) of every gradient of ``sum(w * model(x))`` against
    central differences, within ``1e-5 * (1 + |gradient|)``."""
    y = model(x)
    w = rng.normal(size=y.shape)
    model.zero_grad()
    dx = model.backward(w, input_grad=True)

    def loss():
        return np.sum(w * model(x))

    for analytic, array in [(p.grad.copy(), p.data) for p in params] + [(dx, x)]:
        numeric = central_differences(loss, array, h, limit=40)
        sampled = ~np.isnan(numeric)
        assert np.all(np.abs(analytic - numeric)[sampled]
                      <= 1e-5 * (1 + np.abs(analytic[sampled])))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_matches_the_formula(backend, causal, rng):
    mha = MultiHeadAttention(12, num_heads=3, causal=causal)
    model = fnn.Sequential(mha, dtype="float64", seed=1).to(backend)
    for p in mha.parameters():
        p.data[...] = rng.normal(size=p.shape) * 0.5
    x = rng.normal(size=(2, 7, 12))
    np.testing.assert_allclose(model(x), mha_reference(x, mha, causal), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_head_attention_backward_matches_finite_differences(backend, rng):
    mha = MultiHeadAttention(8, num_heads=2, causal=True)
    model = fnn.Sequential(mha, dtype="float64", seed=2).to(backend)
    _fd(model, rng.normal(size=(2, 5, 8)), rng, model.parameters())


def test_the_pytorch_weight_layout_maps_onto_ours(rng):
    """torch.nn.MultiheadAttention computes x @ W.T with W stored (out, in); its
    state_dict mapped by load_torch_state gives the same function."""
    e = 6
    torch_state = {"in_proj_weight": rng.normal(size=(3 * e, e)),
                   "in_proj_bias": rng.normal(size=3 * e),
                   "out_proj.weight": rng.normal(size=(e, e)),
                   "out_proj.bias": rng.normal(size=e)}
    mha = MultiHeadAttention(e, num_heads=2)
    fnn.Sequential(mha, dtype="float64")
    mha.load_torch_state(torch_state)
    x = rng.normal(size=(3, 4, e))
    q, k, v = np.split(x @ torch_state["in_proj_weight"].T + torch_state["in_proj_bias"], 3,
                       axis=-1)
    heads = [(slice(0, 3), slice(3, 6))]
    outs = []
    for h in (slice(0, 3), slice(3, 6)):
        p = _softmax(q[..., h] @ k[..., h].transpose(0, 2, 1) / np.sqrt(3))
        outs.append(p @ v[..., h])
    expected = np.concatenate(outs, axis=-1) @ torch_state["out_proj.weight"].T + \
        torch_state["out_proj.bias"]
    assert heads
    np.testing.assert_allclose(fnn.Sequential(mha, dtype="float64")(x), expected, rtol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_the_formula_in_eval_mode(norm_first, rng):
    layer = TransformerEncoderLayer(8, num_heads=2, ff_dim=16, dropout=0.3,
                                    activation="gelu", norm_first=norm_first)
    model = fnn.Sequential(layer, dtype="float64", seed=3).eval()
    for p in layer.parameters():
        p.data[...] = rng.normal(size=p.shape) * 0.4
    x = rng.normal(size=(2, 5, 8))

    def norm(z, ln):
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5) \
            * ln.weight.data + ln.bias.data

    def ff(z):
        from math import erf
        a = z @ layer.linear1.weight.data + layer.linear1.bias.data
        a = a * 0.5 * (1 + np.vectorize(erf)(a / np.sqrt(2)))
        return a @ layer.linear2.weight.data + layer.linear2.bias.data

    attn = lambda z: mha_reference(z, layer.self_attn)      # noqa: E731
    if norm_first:
        h = x + attn(norm(x, layer.norm1))
        expected = h + ff(norm(h, layer.norm2))
    else:
        h = norm(x + attn(x), layer.norm1)
        expected = norm(h + ff(h), layer.norm2)
    np.testing.assert_allclose(model(x), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_backward_matches_finite_differences(backend, norm_first, rng):
    layer = TransformerEncoderLayer(8, num_heads=2, ff_dim=12, dropout=0.0,
                                    norm_first=norm_first, activation="tanh")
    model = fnn.Sequential(layer, dtype="float64", seed=4).to(backend)
    for ln in (layer.norm1, layer.norm2):
        ln.weight.data[...] = rng.normal(size=8)
        ln.bias.data[...] = rng.normal(size=8)
    _fd(model, rng.normal(size=(2, 4, 8)), rng, model.parameters())


def test_transformer_layers_save_load_and_follow_modes(tmp_path, rng):
    model = fnn.Sequential(fnn.Linear(5, 8), TransformerEncoderLayer(8, 2, ff_dim=16,
                                                                     dropout=0.5),
                           dtype="float64", seed=5)
    x = rng.normal(size=(3, 6, 5))
    assert not np.array_equal(model(x), model(x))          # dropout active in training
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    model.save(tmp_path / "t.fnn")
    loaded = fnn.load(tmp_path / "t.fnn").eval()
    np.testing.assert_array_equal(loaded(x), model(x))
    assert model.output_shape((None, 6, 5)) == (None, 6, 8)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, num_heads=3)
