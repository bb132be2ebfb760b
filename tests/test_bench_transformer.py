"""The transformer training step of ``fastnn bench --only training-transformer``: fastnn
and PyTorch compute the same step from the same weights, and the section gives its rows."""
import numpy as np
import pytest

from fastnn import bench
from fastnn.bench import sections
from fastnn.bench.transformer_step import (TRANSFORMER, fastnn_transformer_step,
                                           transformer_flops, transformer_model)


def test_the_step_trains_the_command_lines_model():
    step = fastnn_transformer_step(4)
    assert repr(step.model) == repr(transformer_model())
    before = step.parameters()
    losses = [float(step()) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(not np.array_equal(a, b) for a, b in zip(before, step.parameters()))


def test_fastnn_and_pytorch_compute_the_same_step():
    """float64, dropout 0, from the same weights: the same loss and gradients at each of
    three Adam steps, and the same parameters after them."""
    pytest.importorskip("torch")
    from fastnn.bench.transformer_step import TorchTransformerStep
    ours, theirs = fastnn_transformer_step(6, np.float64), TorchTransformerStep(6, dtype=np.float64)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_array_equal(a, b)
    for _ in range(3):
        np.testing.assert_allclose(float(ours()), theirs().item(), rtol=1e-10)
        for a, b in zip(ours.gradients(), theirs.gradients()):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-11)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-11)


def test_flops_count_the_products():
    s, e, f = TRANSFORMER.side, TRANSFORMER.embed_dim, TRANSFORMER.ff_dim
    forward_layer = 2 * s * (e * 3 * e + e * e + 2 * e * f) + 2 * 2 * s * s * e
    forward = 2 * forward_layer + 2 * s * s * e + 2 * e * 10
    assert transformer_flops(1) == 3 * forward - 2 * s * s * e
    assert transformer_flops(128) == 128 * transformer_flops(1)


def test_transformer_section_rows(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    results = bench.run(only=["training-transformer"], rounds=1, batches=[2],
                        out_dir=str(tmp_path), own_process=False, step_block_seconds=0.01)
    assert [(r.case, r.shape, r.mode, r.target) for r in results] == [
        ("mnist rows 28x28, 2 layers, d 64, 4 heads", "B=2", "interleaved", 1.0)]
    assert results[0].baseline.startswith("torch ")
    assert "training-transformer" in sections.SECTIONS
