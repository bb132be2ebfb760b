"""Optimiser state: state_dict round trips, resumed training equal to uninterrupted
training bit for bit, refused mismatches, dtypes, saved models, thread-count independence
(the update rules and parameter groups: test_optimizers.py)."""
import numpy as np
import pytest

import fastnn as fnn

from test_optimizers import _model


def _train_explicitly(model, opt, x, y, steps, start=0):
    loss_fn = fnn.CrossEntropyLoss()
    for i in range(start, start + steps):
        xb, yb = x[(i * 8) % 40:(i * 8) % 40 + 8], y[(i * 8) % 40:(i * 8) % 40 + 8]
        _, grad = loss_fn(model(xb), yb)
        opt.zero_grad()
        model.backward(grad)
        opt.step()


OPTIMIZERS = {
    "adam_amsgrad": lambda ps: fnn.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw_groups": lambda ps: fnn.AdamW([{"params": ps[:2], "lr": 3e-2}, {"params": ps[2:]}],
                                         lr=1e-2),
    "rmsprop": lambda ps: fnn.RMSprop(ps, lr=1e-3, momentum=0.9, centered=True),
    "sgd": lambda ps: fnn.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resuming_from_state_dict_equals_uninterrupted_training(name, rng):
    """Bit for bit in float64: 10 steps in one go, or 4 steps, state_dict of model and
    optimiser, a fresh model and optimiser loading both, 6 more steps."""
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    straight = _model()
    _train_explicitly(straight, OPTIMIZERS[name](straight.parameters()), x, y, 10)
    first = _model()
    first_opt = OPTIMIZERS[name](first.parameters())
    _train_explicitly(first, first_opt, x, y, 4)
    saved_model, saved_opt = first.state_dict(), first_opt.state_dict()
    resumed = _model(seed=1)
    resumed.load_state_dict(saved_model)
    resumed_opt = OPTIMIZERS[name](resumed.parameters())
    resumed_opt.load_state_dict(saved_opt)
    _train_explicitly(resumed, resumed_opt, x, y, 6, start=4)
    for (key, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=key)


def test_state_dict_holds_copies_and_python_int_steps(rng):
    model = _model()
    opt = fnn.Adam(fnn.weight_decay_groups(model), lr=0.01, amsgrad=True)
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    _train_explicitly(model, opt, x, y, 3)
    sd = opt.state_dict()
    assert sd["hyperparameters"]["lr"] == 0.01
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert [g["weight_decay"] for g in sd["param_groups"]] == [0.0, 0.0]
    for s in sd["state"]:
        assert type(s["step"]) is int and s["step"] == 3
        assert set(s) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    sd["state"][0]["exp_avg"][...] = 123.0
    assert not np.any(opt.state[0]["exp_avg"] == 123.0)
    sd["param_groups"][1]["lr"] = 0.0              # a schedule may have set 0
    sd["state"][1]["step"] = np.int64(7)
    opt.load_state_dict(sd)
    assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[0]["lr"] == 0.01
    assert np.all(opt.state[0]["exp_avg"] == 123.0) and opt.state[1]["step"] == 7
    assert type(opt.state[1]["step"]) is int


def test_load_state_dict_refuses_mismatches_and_changes_nothing(rng):
    model = _model()
    opt = fnn.Adam(model.parameters(), lr=0.01)
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    _train_explicitly(model, opt, x, y, 2)
    before = opt.state_dict()
    sgd = fnn.SGD(model.parameters(), momentum=0.9)
    with pytest.raises(ValueError, match="has no hyperparameter 'momentum'"):
        opt.load_state_dict(sgd.state_dict())
    amsgrad = fnn.Adam(model.parameters(), amsgrad=True).state_dict()
    for group in amsgrad["param_groups"]:
        group["amsgrad"] = False               # groups without, state with the maximum
    with pytest.raises(ValueError, match="keys .*expected"):
        opt.load_state_dict(amsgrad)
    bad = opt.state_dict()
    bad["state"][3]["exp_avg"] = np.zeros(4)
    with pytest.raises(ValueError, match="'exp_avg' of parameter 3 has shape"):
        opt.load_state_dict(bad)
    grouped = fnn.Adam(fnn.weight_decay_groups(model)).state_dict()
    with pytest.raises(ValueError, match="groups of"):
        opt.load_state_dict(grouped)
    bad = opt.state_dict()
    bad["state"][0]["step"] = -1
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for a, b in zip(after["state"], before["state"]):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        np.testing.assert_array_equal(a["exp_avg"], b["exp_avg"])


def test_state_follows_the_model_dtype(rng):
    model = _model(dtype="float32")
    opt = fnn.Adam(model.parameters(), lr=0.01)
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    _train_explicitly(model, opt, x, y, 2)
    model.astype("float64")
    _train_explicitly(model, opt, x, y, 1)
    assert all(v.dtype == np.float64 for s in opt.state for v in s.values()
               if isinstance(v, np.ndarray))
    assert opt.state[0]["step"] == 3


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_fit_with_each_optimizer_learns(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    model = _model()
    lr = {"adam": 1e-2, "adamw": 1e-2, "rmsprop": 1e-2}[name]
    model.compile(optimizer=fnn.OPTIMIZERS[name](lr=lr), loss="cross_entropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=32, seed=0, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8


@pytest.mark.parametrize("make", [
    lambda m: fnn.Adam(fnn.weight_decay_groups(m), lr=1e-2, amsgrad=True, weight_decay=1e-3),
    lambda m: fnn.AdamW([{"params": m[0].parameters(), "lr": 3e-2},
                         {"params": m[2].parameters()}], lr=1e-2, clip_norm=1.0),
    lambda m: fnn.RMSprop(lr=1e-3, momentum=0.9, centered=True),
], ids=["adam_amsgrad_groups", "adamw_lr_groups", "rmsprop"])
def test_saved_model_resumes_bit_for_bit(tmp_path, make):
    """fit 2 epochs, or fit 1 + model.save + fastnn.load + fit 1: the same weights
    (float64, bit for bit); the groups, their hyperparameters and the step counts come
    back from the file."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((64, 6)), rng.integers(0, 3, 64)

    def compiled():
        model = _model()
        model.compile(optimizer=make(model), loss="cross_entropy", metrics=["accuracy"])
        return model

    straight = compiled()
    straight.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    first = compiled()
    first.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    first.save(tmp_path / "mid.fnn")
    resumed = fnn.load(tmp_path / "mid.fnn")
    opt, saved = resumed.optimizer, first.optimizer
    assert type(opt) is type(saved) and opt.clip_norm == saved.clip_norm
    assert ([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            == [{k: v for k, v in g.items() if k != "params"} for g in saved.param_groups])
    index = {id(p): i for i, p in enumerate(resumed.parameters())}
    saved_index = {id(p): i for i, p in enumerate(first.parameters())}
    assert ([[index[id(p)] for p in g["params"]] for g in opt.param_groups]
            == [[saved_index[id(p)] for p in g["params"]] for g in saved.param_groups])
    assert [s["step"] for s in opt.state] == [4] * 4
    assert all(type(s["step"]) is int for s in opt.state)
    resumed.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


@pytest.mark.parametrize("make", [lambda: fnn.AdamW(lr=1e-2, amsgrad=True),
                                  lambda: fnn.RMSprop(lr=1e-3, momentum=0.9, centered=True)],
                         ids=["adamw", "rmsprop"])
def test_weights_do_not_depend_on_the_thread_count(make):
    """float32, a first layer of 40 x 1100 weights (parallel update path): bit-identical
    weights on 1 and 2 threads."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 threads")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 40)).astype(np.float32)
    y = (x[:, :5].sum(axis=1) > 0).astype(int)
    weights = []
    for n_threads in (1, 2):
        fnn.set_num_threads(n_threads)
        try:
            model = fnn.Sequential(fnn.Linear(40, 1100), fnn.ReLU(), fnn.Linear(1100, 2),
                                   seed=0)
            model.compile(optimizer=make(), loss="cross_entropy")
            model.fit(x, y, epochs=2, batch_size=64, seed=0, verbose=0)
            weights.append(model.state_dict())
        finally:
            fnn.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)
