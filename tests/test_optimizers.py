"""Adam, AdamW, RMSprop (and the optimiser machinery SGD shares): each optimiser against
PyTorch's documented update rule written out here, parameter groups, hyperparameter
errors (state_dict and resumed training: test_optimizer_state.py).  The kernels themselves are tested against the
NumPy reference in test_optim_kernels.py."""
import numpy as np
import pytest

import fastnn as fnn

from conftest import random

# --------------------------------------------------------------------------- the formulas
def _run(opt_factory, grads, start, backend):
    """Parameters after ``opt.step()`` with each of ``grads`` (lists of arrays, one per
    parameter) in turn, from ``start``."""
    params = [fnn.Parameter(a.copy()) for a in start]
    opt = opt_factory(params)
    with fnn.use_backend(backend):
        for step_grads in grads:
            opt.zero_grad()
            for p, g in zip(params, step_grads):
                p.grad[...] = g
            opt.step()
    return [p.data for p in params], opt


def _problem(rng, steps=6, shapes=((5, 3), (3,))):
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    grads[2][0][1, 2] = 0.0               # an exact zero gradient on the way
    return start, grads


def adam_by_hand(start, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, decoupled=False):
    """torch.optim.Adam / AdamW as their documentation writes them (float64)."""
    beta1, beta2 = betas
    out = []
    for i, theta in enumerate(start):
        theta = theta.copy()
        m = np.zeros_like(theta)
        v = np.zeros_like(theta)
        v_max = np.zeros_like(theta)
        for t, step_grads in enumerate(grads, start=1):
            g = step_grads[i].copy()
            if decoupled:
                theta = theta - lr * weight_decay * theta       # AdamW: theta *= 1 - lr*wd
            elif weight_decay:
                g = g + weight_decay * theta
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat = m / (1 - beta1 ** t)
            if amsgrad:
                v_max = np.maximum(v_max, v)
                v_hat = v_max / (1 - beta2 ** t)
            else:
                v_hat = v / (1 - beta2 ** t)
            theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return out


def rmsprop_by_hand(start, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                    momentum=0.0, centered=False):
    """torch.optim.RMSprop as its documentation writes it (float64)."""
    out = []
    for i, theta in enumerate(start):
        theta = theta.copy()
        v = np.zeros_like(theta)
        g_ave = np.zeros_like(theta)
        b = np.zeros_like(theta)
        for step_grads in grads:
            g = step_grads[i].copy()
            if weight_decay:
                g = g + weight_decay * theta
            v = alpha * v + (1 - alpha) * g * g
            v_tilde = v
            if centered:
                g_ave = alpha * g_ave + (1 - alpha) * g
                v_tilde = v_tilde - g_ave * g_ave
            if momentum > 0:
                b = momentum * b + g / (np.sqrt(v_tilde) + eps)
                theta = theta - lr * b
            else:
                theta = theta - lr * g / (np.sqrt(v_tilde) + eps)
        out.append(theta)
    return out


ADAM_CASES = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"weight_decay": 0.1},
    {"amsgrad": True, "weight_decay": 0.05},
]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_follows_the_documented_algorithm(kwargs, backend, rng):
    start, grads = _problem(rng)
    got, opt = _run(lambda ps: fnn.Adam(ps, **kwargs), grads, start, backend)
    for a, b in zip(got, adam_by_hand(start, grads, **kwargs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert all(s["step"] == len(grads) and type(s["step"]) is int for s in opt.state)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kwargs", [{}, {"lr": 0.05, "weight_decay": 0.3},
                                    {"amsgrad": True, "weight_decay": 0.1}], ids=str)
def test_adamw_follows_the_documented_algorithm(kwargs, backend, rng):
    start, grads = _problem(rng)
    got, _ = _run(lambda ps: fnn.AdamW(ps, **kwargs), grads, start, backend)
    expected = adam_by_hand(start, grads, decoupled=True,
                            **{"weight_decay": 0.01, **kwargs})
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


RMSPROP_CASES = [
    {},
    {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1},
    {"centered": True},
    {"momentum": 0.9},
    {"centered": True, "momentum": 0.5, "weight_decay": 0.01, "lr": 1e-3},
]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kwargs", RMSPROP_CASES, ids=str)
def test_rmsprop_follows_the_documented_algorithm(kwargs, backend, rng):
    start, grads = _problem(rng)
    got, opt = _run(lambda ps: fnn.RMSprop(ps, **kwargs), grads, start, backend)
    for a, b in zip(got, rmsprop_by_hand(start, grads, **kwargs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert all(s["step"] == len(grads) for s in opt.state)


def test_pytorch_defaults():
    adam, adamw, rms = fnn.Adam(), fnn.AdamW(), fnn.RMSprop()
    assert adam.defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                             "weight_decay": 0.0, "amsgrad": False}
    assert adamw.defaults == {**adam.defaults, "weight_decay": 1e-2}
    assert rms.defaults == {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
                            "momentum": 0.0, "centered": False}


def test_float32_parameters_stay_float32_and_in_place(rng):
    for cls in (fnn.Adam, fnn.AdamW, fnn.RMSprop):
        p = fnn.Parameter(random(rng, (4, 3), np.float32))
        data = p.data
        opt = cls([p], **({"momentum": 0.9, "centered": True} if cls is fnn.RMSprop
                         else {"amsgrad": True}))
        p.grad[...] = random(rng, (4, 3), np.float32)
        opt.step()
        assert p.data is data and p.data.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state[0].values()
                   if isinstance(v, np.ndarray))


def test_a_parameter_without_gradient_is_not_updated(rng):
    """Like PyTorch's skipping of p.grad is None: no update and no step count."""
    a, b = fnn.Parameter(random(rng, 3, np.float64)), fnn.Parameter(random(rng, 3, np.float64))
    opt = fnn.Adam([a, b], lr=0.1)
    before = b.data.copy()
    opt.zero_grad()
    a.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(b.data, before)
    assert [s["step"] for s in opt.state] == [1, 0]


# --------------------------------------------------------------------------- groups
def _model(seed=0, dtype="float64"):
    return fnn.Sequential(fnn.Linear(6, 5), fnn.Tanh(), fnn.Linear(5, 3), seed=seed,
                          dtype=dtype)


def test_parameter_groups_override_the_defaults(rng):
    """Two groups with their own lr and weight decay give what two optimisers would."""
    start, grads = _problem(rng, shapes=((5, 3), (3,), (3, 2)))
    groups = lambda ps: fnn.AdamW([{"params": ps[:2], "lr": 0.05},                 # noqa: E731
                                   {"params": ps[2:], "weight_decay": 0.0}],
                                  lr=1e-3, weight_decay=0.1)
    got, opt = _run(groups, grads, start, "numba")
    assert [g["lr"] for g in opt.param_groups] == [0.05, 1e-3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    first = adam_by_hand(start[:2], [g[:2] for g in grads], lr=0.05, weight_decay=0.1,
                         decoupled=True)
    second = adam_by_hand(start[2:], [g[2:] for g in grads], lr=1e-3, weight_decay=0.0,
                          decoupled=True)
    for a, b in zip(got, first + second):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_weight_decay_groups_spare_biases():
    model = _model()
    groups = fnn.weight_decay_groups(model)
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert all(len(p.shape) == 2 for p in groups[0]["params"])
    assert all(len(p.shape) == 1 for p in groups[1]["params"])
    assert "weight_decay" not in groups[0] and groups[1]["weight_decay"] == 0.0
    opt = fnn.AdamW(groups, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    # by name, from named parameters
    by_name = fnn.weight_decay_groups(model.named_parameters(),
                                      no_decay=lambda name, p: name.startswith("2."))
    assert [len(g["params"]) for g in by_name] == [2, 2]
    assert by_name[1]["params"][0] is model[2].weight


def test_named_parameters_are_accepted():
    model = _model()
    opt = fnn.SGD(model.named_parameters(), lr=0.1)
    assert opt.params == model.parameters()


def test_group_errors_are_clear():
    model = _model()
    ps = model.parameters()
    with pytest.raises(ValueError, match="more than one parameter group"):
        fnn.Adam([{"params": ps}, {"params": ps[:1]}])
    with pytest.raises(ValueError, match=r"unknown keys \['momentum'\].*amsgrad, betas"):
        fnn.Adam([{"params": ps, "momentum": 0.9}])
    with pytest.raises(ValueError, match="no 'params'"):
        fnn.Adam([{"lr": 0.1}])
    with pytest.raises(ValueError, match="lr must be > 0"):
        fnn.Adam([{"params": ps, "lr": -1}])
    with pytest.raises(TypeError, match="not a mixture"):
        fnn.Adam([ps[0], {"params": ps[1:]}])
    with pytest.raises(TypeError, match="iterable of Parameters"):
        fnn.Adam(ps[0])
    with pytest.raises(ValueError, match="empty parameter list"):
        fnn.Adam([])
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        fnn.SGD([{"params": ps, "momentum": 0.0}], momentum=0.9, nesterov=True)


def test_hyperparameter_attributes_read_the_first_group_and_set_all():
    model = _model()
    opt = fnn.Adam(fnn.weight_decay_groups(model), lr=0.01, weight_decay=0.1)
    assert opt.lr == 0.01 and opt.weight_decay == 0.1 and opt.betas == (0.9, 0.999)
    opt.lr = 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5] and opt.defaults["lr"] == 0.5
    with pytest.raises(ValueError, match="lr must be > 0"):
        opt.lr = 0
    assert opt.lr == 0.5
    with pytest.raises(AttributeError):
        opt.momentum


def test_hyperparameter_changes_after_binding_add_or_drop_state(rng):
    """Turning momentum or AMSGrad on later (through the attribute or a group's dict, as
    PyTorch users do) creates the state it needs; turning it off through the attribute
    drops it, so the state_dict stays loadable into a fresh optimiser."""
    start, grads = _problem(rng, steps=3)
    params = [fnn.Parameter(a.copy()) for a in start]
    sgd = fnn.SGD(params, lr=0.1)
    sgd.momentum = 0.9
    assert all("velocity" in s for s in sgd.state)
    sgd.param_groups[0]["nesterov"] = True
    rms = fnn.RMSprop(params)
    rms.param_groups[0]["momentum"] = 0.5         # dict edit: created at the next step
    adam = fnn.Adam(params)
    for opt in (sgd, rms, adam):
        for g_step in grads:
            opt.zero_grad()
            for p, g in zip(params, g_step):
                p.grad[...] = g
            opt.step()
    assert all("momentum_buffer" in s for s in rms.state)
    adam.amsgrad = True
    assert all("max_exp_avg_sq" in s for s in adam.state)
    adam.amsgrad = False
    assert not any("max_exp_avg_sq" in s for s in adam.state)
    fnn.Adam(params).load_state_dict(adam.state_dict())


def test_compile_accepts_the_new_names():
    for name, cls in [("adam", fnn.Adam), ("adamw", fnn.AdamW), ("rmsprop", fnn.RMSprop),
                      ("ADAM", fnn.Adam)]:
        model = _model()
        model.compile(optimizer=name, loss="cross_entropy")
        assert type(model.optimizer) is cls and model.optimizer.params == model.parameters()
    assert set(fnn.OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}


def test_compile_keeps_the_groups_and_state_of_an_optimizer_built_for_the_model(rng):
    model = _model()
    opt = fnn.AdamW(fnn.weight_decay_groups(model), lr=1e-2)
    x, y = rng.standard_normal((20, 6)), rng.integers(0, 3, 20)
    model.compile(optimizer=opt, loss="cross_entropy")
    assert model.optimizer is opt and len(opt.param_groups) == 2
    model.fit(x, y, epochs=1, batch_size=10, verbose=0)
    steps = [s["step"] for s in opt.state]
    model.compile(optimizer=opt, loss="cross_entropy")        # recompiling keeps state
    assert [s["step"] for s in opt.state] == steps == [2] * 4
    # only some parameters: the others stay frozen
    frozen = _model()
    head = fnn.Adam(frozen[2].parameters(), lr=0.1)
    frozen.compile(optimizer=head, loss="cross_entropy")
    before = frozen[0].weight.data.copy()
    frozen.fit(x, y, epochs=1, batch_size=10, verbose=0)
    np.testing.assert_array_equal(frozen[0].weight.data, before)
    with pytest.raises(ValueError, match="not all in this model"):
        _model().compile(optimizer=head, loss="cross_entropy")


def test_hyperparameter_errors_are_clear():
    cases = [
        (lambda: fnn.Adam(lr=-1e-3), ValueError, "lr must be > 0"),
        (lambda: fnn.Adam(lr=0), ValueError, "lr must be > 0"),
        (lambda: fnn.Adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be < 1"),
        (lambda: fnn.Adam(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be >= 0"),
        (lambda: fnn.Adam(betas=0.9), TypeError, r"betas must be a pair"),
        (lambda: fnn.Adam(betas=(0.9, 0.99, 0.9)), TypeError, r"betas must be a pair"),
        (lambda: fnn.Adam(eps=0.0), ValueError, "eps must be > 0"),
        (lambda: fnn.AdamW(eps=-1e-8), ValueError, "eps must be > 0"),
        (lambda: fnn.AdamW(weight_decay=-0.01), ValueError, "weight_decay must be >= 0"),
        (lambda: fnn.Adam(amsgrad="yes"), TypeError, "amsgrad must be True or False"),
        (lambda: fnn.Adam(lr=float("nan")), ValueError, "lr must be finite"),
        (lambda: fnn.Adam(lr="0.1"), TypeError, "lr must be a number"),
        (lambda: fnn.RMSprop(alpha=1.0), ValueError, "alpha must be < 1"),
        (lambda: fnn.RMSprop(momentum=1.5), ValueError, "momentum must be < 1"),
        (lambda: fnn.RMSprop(eps=0), ValueError, "eps must be > 0"),
        (lambda: fnn.RMSprop(centered=1), TypeError, "centered must be True or False"),
        (lambda: fnn.Adam(clip_norm=0), ValueError, "clip_norm must be > 0"),
        (lambda: fnn.Adam(momentum=0.9), TypeError, "momentum"),
    ]
    for make, error, message in cases:
        with pytest.raises(error, match=message):
            make()
