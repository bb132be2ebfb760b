"""The benchmark's machinery and baselines: correct, and measuring what it says.

Nothing here asserts a timing.  The hand-written NumPy step must compute fastnn's
gradients and update (else the training targets race a strawman or a different
computation); the block timing must alternate contenders, discard the warm-up block and
return block means and medians; the report must carry the kernel path.
"""
import json

import numpy as np
import pytest

from fastnn import bench
from fastnn.bench.report import Result, to_markdown
from fastnn.bench.steps import batch_data, initial_parameters
from fastnn.bench.timing import Contender, Timing, interleave


def _flat_numpy(net):
    return ([a for pair in zip(net.weights, net.biases) for a in pair],
            [a for pair in zip(net.weight_grads, net.bias_grads) for a in pair])


# --------------------------------------------------------------------------- NumPy baseline
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_handwritten_numpy_step_matches_fastnn_float64(backend):
    # a prime batch, three steps: gradients, losses and the momentum update all agree
    x, labels = batch_data(7, np.float64)
    fastnn = bench.FastnnStep(7, backend, np.float64, x=x, labels=labels)
    params = fastnn.parameters()
    numpy_step = bench.NumpyMLPStep(params[0::2], params[1::2], 7, lr=1e-3, momentum=0.9)
    for _ in range(3):
        fast_loss = fastnn()
        numpy_loss = numpy_step(x, labels)
        assert numpy_loss == pytest.approx(fast_loss, rel=1e-12)
        numpy_params, numpy_grads = _flat_numpy(numpy_step)
        fast_grads = [p.grad for _, p in fastnn.model.named_parameters()]
        for got, want in zip(numpy_grads, fast_grads):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
        for got, want in zip(numpy_params, fastnn.parameters()):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_handwritten_numpy_step_stays_float32_and_in_place():
    step = bench.HandwrittenNumpyStep(5)
    net = step.net
    weights = [id(w) for w in net.weights]
    loss = step()
    assert np.isfinite(loss)
    assert [id(w) for w in net.weights] == weights
    for array in (*net.weights, *net.biases, *net.weight_velocity, *net.deltas):
        assert array.dtype == np.float32


def test_handwritten_numpy_step_loss_is_stable_for_large_logits():
    # logits of +-1e4 overflow a naive exp(); the max-shifted softmax does not
    weights = [np.eye(3, dtype=np.float64) * 1e4]
    net = bench.NumpyMLPStep(weights, [np.zeros(3)], batch=2, lr=0.0, momentum=0.0)
    x = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    loss = net(x, np.array([1, 2]))
    # row 0: log(sum exp(z - max)) - (z_1 - max) = 2e4; row 1: 0
    assert loss == pytest.approx(1e4)
    assert np.all(np.isfinite(net.deltas[-1]))


def test_every_contender_starts_from_the_same_weights():
    params = initial_parameters()
    for got, want in zip(bench.HandwrittenNumpyStep(3).parameters(), params):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(bench.FastnnStep(3, "numpy").parameters(), params):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_optional_contenders_compute_the_same_update(name):
    pytest.importorskip(name)
    contender = bench.make_contender(name, 16)
    reference = bench.HandwrittenNumpyStep(16)
    for _ in range(2):
        contender.fn()
        reference()
    for got, want in zip(contender.fn.parameters(), reference.parameters()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- block timing
def test_interleave_alternates_blocks_and_discards_the_warmup():
    log = []
    contenders = [Contender("a", lambda: log.append("a")),
                  Contender("b", lambda: log.append("b"))]
    timings = interleave(contenders, rounds=3, block_calls=2)
    # one warm-up round, then three timed rounds, each an a-block then a b-block
    assert "".join(log) == "aabb" * 4
    for timing in timings.values():
        assert isinstance(timing, Timing)
        assert timing.block_calls == 2 and len(timing.block_means) == 3
        assert timing.median > 0 and timing.mean > 0
        assert timing.mean == pytest.approx(sum(timing.block_means) / 3)


def test_work_between_calls_runs_once_per_call():
    calls = {"fn": 0, "between": 0}

    def fn():
        calls["fn"] += 1

    def between():
        calls["between"] += 1
    interleave([Contender("x", fn, between)], rounds=2, block_calls=3, warmup_blocks=0)
    assert calls == {"fn": 6, "between": 6}


def test_timing_survives_json():
    timing = Timing(4, [1e-3, 2e-3], 1.5e-3)
    again = Timing.from_dict(json.loads(json.dumps(timing.to_dict())))
    assert again == timing and again.mean == pytest.approx(1.5e-3)


def test_tiny_training_comparison_gives_a_result_with_block_means_and_medians():
    fastnn = bench.make_contender("fastnn", 4)
    numpy_step = bench.make_contender("numpy", 4)
    timings = interleave([fastnn, numpy_step], rounds=2, block_calls=2)
    result = Result.from_timings("training step", "mlp", "B=4", 1, timings["fastnn"],
                                 timings["numpy"], baseline="numpy (hand-written)", target=2.0)
    assert result.fastnn_ms > 0 and result.baseline_ms > 0
    assert result.fastnn_median_ms > 0 and result.baseline_median_ms > 0
    assert result.ratio == pytest.approx(result.baseline_ms / result.fastnn_ms)
    assert result.median_ratio == pytest.approx(result.baseline_median_ms
                                                 / result.fastnn_median_ms)
    assert len(result.fastnn_blocks_ms) == 2 and result.fastnn_block_calls == 2
    assert result.met == (result.ratio >= 2.0)


def test_own_process_timing_returns_timings_per_batch():
    from fastnn.bench.isolated import time_in_own_process
    timings = time_in_own_process("numpy", [3, 5], rounds=1, block_calls=2)
    assert set(timings) == {3, 5}
    assert all(t.block_calls == 2 and len(t.block_means) == 1 for t in timings.values())


# --------------------------------------------------------------------------- report
def test_slowdown_rows_are_met_below_the_limit():
    assert Result("c", "x", "B=1", 2, 1.05, 1.0, kind="slowdown", target=1.1).met
    slow = Result("c", "x", "B=1", 2, 1.5, 1.0, kind="slowdown", target=1.1)
    assert not slow.met and slow.ratio == pytest.approx(1.5)
    assert slow.target_text() == "slowdown <= 1.1x"


def test_markdown_names_the_kernel_path_and_shows_medians():
    env = bench.environment()
    assert env["isa"] and env["kernel_path"] and env["cpu"]
    result = Result("training step", "mlp", "B=32", 2, 1.0, 2.0, fastnn_median_ms=0.9,
                    baseline_median_ms=1.9, target=2.0)
    text = to_markdown([result], env, settings="tiny")
    assert env["kernel_path"] in text and env["cpu"] in text
    assert "| 0.9 / 1.9 |" in text and "2.00x" in text and "1 of 1 targets met" in text


def test_run_one_section_writes_markdown_and_json(tmp_path, capsys):
    results = bench.run(only=["optimizer"], rounds=1, out_dir=str(tmp_path),
                        kernel_block_seconds=0.002)
    from fastnn.bench.steps import available
    expected = ["sgd_momentum", "sgd", "adam"] + (["adam"] if available("torch") else [])
    assert [r.case for r in results] == expected and {r.group for r in results} == {"optimizer"}
    data = json.loads((tmp_path / "bench-optimizer.json").read_text())
    assert data["environment"]["isa"] == bench.environment()["isa"]
    assert {"fastnn_ms", "fastnn_median_ms", "ratio", "median_ratio"} <= set(data["results"][0])
    assert "## optimizer" in (tmp_path / "bench-optimizer.md").read_text()


def test_cli_only_accepts_sections_and_rejects_unknown_ones(capsys):
    import argparse
    parser = bench.add_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--only", "training,coexistence"]).only == ["training",
                                                                          "coexistence"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--only", "trainig"])
    assert "choose from" in capsys.readouterr().err


# --------------------------------------------------------------------------- Adam baselines
@pytest.mark.parametrize("contender", ["numpy", "torch"])
def test_adam_baselines_compute_fastnns_update_float64(contender):
    """The careful NumPy user's Adam and PyTorch's foreach Adam, five steps on a prime
    size in float64: the same parameters as fastnn.Adam (which the tests check against
    PyTorch's documented algorithm)."""
    if contender == "torch":
        pytest.importorskip("torch")
    case = bench.adam_case(size=1031, dtype=np.float64, lr=1e-2, torch=contender == "torch")
    start = case.data["numba"].copy()
    for _ in range(5):
        case.run["numba"]()
        case.run[contender]()
    assert not np.allclose(case.data["numba"], start)
    np.testing.assert_allclose(case.data[contender], case.data["numba"], rtol=1e-13, atol=1e-15)


def test_numpy_adam_stays_float32_and_in_place():
    case = bench.adam_case(size=257, torch=False)
    param = case.data["numpy"]
    assert case.run["numpy"]() is param and param.dtype == np.float32
    from fastnn.bench.optimizers import NumpyAdam
    adam = NumpyAdam(np.ones(3, np.float32))
    assert all(a.dtype == np.float32 for a in (adam.exp_avg, adam.exp_avg_sq, adam._tmp))


# --------------------------------------------------------------------------- norm baselines
@pytest.mark.parametrize("contender", ["numpy", "torch"])
@pytest.mark.parametrize("kind", ["batch_norm", "layer_norm"])
def test_norm_baselines_compute_fastnns_forward_and_backward(kind, contender):
    """The careful NumPy user's and PyTorch's BatchNorm/LayerNorm give fastnn's ``y``,
    ``dx``, ``dgamma`` and ``dbeta`` (float64, odd shape; BatchNorm twice, so the running
    statistics are used and updated as fastnn does)."""
    if contender == "torch":
        pytest.importorskip("torch")
    case = bench.norm_case(kind, shape=(37, 23), dtype=np.float64, torch=True)
    for _ in range(2):
        want = [np.array(a) for a in case.run["numba"]()]
        got = [np.asarray(a.detach()) if hasattr(a, "detach") else a
               for a in case.run[contender]()]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    if kind == "batch_norm" and contender == "numpy":
        numpy_norm = case.run["numpy"]
        assert numpy_norm.running_var.dtype == np.float64 and numpy_norm.running_var.any()


def test_numpy_norm_baselines_stay_float32():
    for kind in ("batch_norm", "layer_norm"):
        case = bench.norm_case(kind, shape=(5, 3))
        assert all(a.dtype == np.float32 for a in case.run["numpy"]())


@pytest.mark.parametrize("contender", ["numpy", "torch"])
def test_dropout_baselines_are_inverted_dropout(contender):
    """The baselines keep about 1 - p of the elements, scale them by 1 / (1 - p) and
    backpropagate through the same mask; a new mask each call."""
    if contender == "torch":
        pytest.importorskip("torch")
    case = bench.dropout_case(shape=(200, 100), p=0.25, torch=True)
    x, dy = case.data["x"], case.data["dy"]
    outputs = []
    for _ in range(2):
        y, dx = [np.asarray(a.detach()) if hasattr(a, "detach") else a
                 for a in case.run[contender]()[:2]]
        kept = y != 0
        assert abs(kept.mean() - 0.75) < 0.02
        np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.75), rtol=1e-6)
        np.testing.assert_allclose(dx, np.where(kept, dy / np.float32(0.75), 0), rtol=1e-6)
        outputs.append(kept.copy())
    assert (outputs[0] != outputs[1]).any()


def test_adam_training_steps_compute_the_same_update():
    """The Adam training step of fastnn and of PyTorch eager (the training-adam table):
    after two steps from the same weights, the same parameters."""
    pytest.importorskip("torch")
    from fastnn.bench.steps import FastnnStep, TorchStep
    fastnn, torch = FastnnStep(16, optimizer="adam"), TorchStep(16, optimizer="adam")
    for _ in range(2):
        fastnn()
        torch()
    # float32: Adam divides each gradient element by its own magnitude, so where that is
    # near zero the rounding of the gradient moves the update by up to lr (1e-3)
    for got, want in zip(torch.parameters(), fastnn.parameters()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    assert type(fastnn.optimizer).__name__ == "Adam"


# --------------------------------------------------------------------------- BatchNorm + dropout step
def test_bn_dropout_steps_compute_the_same_step_with_p0_float64():
    """The training-bn contenders (hidden layers Linear(bias=False) -> BatchNorm1d -> ReLU
    -> Dropout, SGD with momentum) with p = 0, where their masks cannot differ, in
    float64 from the same weights: the same loss and gradients at every step, the same
    parameters and running statistics after three."""
    pytest.importorskip("torch")
    from fastnn.bench.steps import FastnnStep, TorchStep
    fastnn = FastnnStep(13, "numba", np.float64, batchnorm=True, dropout=0.0)
    torch = TorchStep(13, batchnorm=True, dropout=0.0, dtype=np.float64)
    start = torch.parameters()
    for got, want in zip(start, fastnn.parameters()):
        np.testing.assert_array_equal(got, want)
    assert [a.shape for a in start] == [(784, 512), (512,), (512,), (512, 256), (256,),
                                        (256,), (256, 10), (10,)]
    for _ in range(3):
        fast_loss, torch_loss = fastnn(), torch()
        assert float(torch_loss.detach()) == pytest.approx(fast_loss, rel=1e-13)
        for got, want in zip(torch.gradients(), fastnn.gradients()):
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    for got, want in zip(torch.parameters(), fastnn.parameters()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    bn_torch = [m for m in torch.model if isinstance(m, torch.torch.nn.BatchNorm1d)]
    bn_fastnn = [m for m in fastnn.model if type(m).__name__ == "BatchNorm1d"]
    for ours, theirs in zip(bn_fastnn, bn_torch):
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)


def test_bn_dropout_contenders_time_the_network_in_training_mode():
    """The timed contenders: float32, BatchNorm and Dropout(BN_DROPOUT) after each hidden
    Linear, training mode, and the masks at work (a step differs from the p = 0 one)."""
    from fastnn.bench.steps import BN_DROPOUT, FastnnStep
    step = bench.make_contender("fastnn-bn", 16).fn
    names = [type(m).__name__ for m in step.model]
    assert names == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert step.model.training and all(m.p == BN_DROPOUT for m in step.model
                                       if type(m).__name__ == "Dropout")
    assert step.model[0].bias is None and step.model[-1].bias is not None
    assert step.x.dtype == np.float32
    loss = step()
    assert loss != pytest.approx(FastnnStep(16, batchnorm=True, dropout=0.0)(), rel=1e-6)
    if bench.steps.available("torch-bn"):
        torch = bench.make_contender("torch-bn", 16).fn
        assert torch.model.training
        assert [type(m).__name__ for m in torch.model] == names
        assert np.isfinite(float(torch().detach()))


def test_bn_training_section_gives_interleaved_rows(tmp_path, capsys):
    pytest.importorskip("torch")
    results = bench.run(only=["training-bn"], rounds=1, batches=[8], own_process=False,
                        out_dir=str(tmp_path), step_block_seconds=0.001, step_min_calls=1)
    assert [(r.group, r.shape, r.mode, r.target) for r in results] == [
        ("training step (BN+dropout)", "B=8", "interleaved", 1.0)]
    assert results[0].baseline.startswith("torch ")
    assert "## training step (BN+dropout)" in (tmp_path / "bench-training-bn.md").read_text()


# --------------------------------------------------------------------------- sequence
@pytest.mark.parametrize("direction", ["forward", "backward", "forward+backward"])
def test_embedding_baselines_compute_fastnns_results(direction):
    """Fancy indexing and ``np.add.at`` (into a zeroed table) give fastnn's lookup and
    table gradient, bit for bit (duplicates are added in the same order)."""
    case = bench.embedding_case(direction, ids=(3, 7), table=(11, 5), dtype=np.float64)
    fastnn, numpy = case.run["numba"](), case.run["numpy"]()
    for got, want in zip(fastnn if isinstance(fastnn, tuple) else (fastnn,),
                         numpy if isinstance(numpy, tuple) else (numpy,)):
        np.testing.assert_array_equal(got, want)
    assert np.unique(case.data["ids"]).size < case.data["ids"].size      # duplicates


def test_sequence_section_rows(tmp_path):
    results = bench.run(only=["sequence"], rounds=1, out_dir=str(tmp_path),
                        kernel_block_seconds=0.002)
    assert [r.case for r in results] == ["embedding forward", "embedding backward",
                                         "embedding forward+backward"]
    assert [r.target for r in results] == [None, 3.0, None]
    assert "## sequence" in (tmp_path / "bench-sequence.md").read_text()


# --------------------------------------------------------------------------- attention
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("direction", ["forward", "forward+backward"])
def test_attention_baselines_compute_fastnns_results(direction, causal):
    """The careful NumPy user's attention (and PyTorch's, when installed) gives fastnn's
    output and gradients; odd sizes, float64."""
    case = bench.attention_case(direction, (2, 3, 37, 8), causal, dtype=np.float64, torch=True)
    expected = case.run["numba"]()
    expected = [a.copy() for a in expected] if isinstance(expected, tuple) else [expected.copy()]
    for name in ("numpy", "torch"):
        if name not in case.run:
            continue
        got = case.run[name]()
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for g, want in zip(got, expected):
            g = g.detach().numpy() if hasattr(g, "detach") else g
            np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12)


def test_attention_section_rows(tmp_path, monkeypatch):
    from fastnn.bench import sections
    monkeypatch.setattr(sections, "ATTENTION_SHAPES", ((1, 2, 9, 8),))
    results = bench.run(only=["attention"], rounds=1, out_dir=str(tmp_path),
                        kernel_block_seconds=0.002)
    baselines = {r.baseline.split()[0] for r in results}
    assert baselines <= {"numpy", "torch"} and "numpy" in baselines
    per_case = len(baselines)
    assert [r.case for r in results[::per_case]] == [
        "attention forward+backward", "attention forward",
        "attention causal forward+backward", "attention causal forward"]
    targets = {(r.case, r.baseline.split()[0]): r.target for r in results}
    assert targets[("attention forward+backward", "numpy")] == 3.0
    assert targets[("attention forward", "numpy")] is None
    if "torch" in baselines:
        assert targets[("attention causal forward+backward", "torch")] == 1.5
    assert "## attention" in (tmp_path / "bench-attention.md").read_text()
