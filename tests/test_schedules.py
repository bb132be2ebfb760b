"""Learning-rate schedules: values at given steps against their closed forms, the
plateau rule traced by hand, state_dict and resumed runs, fit integration, errors."""
import math

import numpy as np
import pytest

import fastnn as fnn


def _optimizer(lrs=(0.1,), cls=fnn.SGD):
    """An optimiser with one group per learning rate in ``lrs``."""
    groups = [{"params": [fnn.Parameter(np.zeros(3))], "lr": lr} for lr in lrs]
    return cls(groups, lr=lrs[0])


def _lrs_over(sched, steps):
    """The lrs of every group at step 0 (after construction) and after each step()."""
    values = [sched.get_last_lr()]
    for _ in range(steps):
        sched.step()
        values.append(sched.get_last_lr())
    return values


# --------------------------------------------------------------------------- closed forms
def test_step_lr():
    opt = _optimizer((0.1, 0.03))
    sched = fnn.StepLR(opt, step_size=3, gamma=0.5)
    for t, lrs in enumerate(_lrs_over(sched, 10)):
        assert lrs == pytest.approx([0.1 * 0.5 ** (t // 3), 0.03 * 0.5 ** (t // 3)], rel=1e-15)
    assert sched.last_step == 10 and opt.lr == sched.get_last_lr()[0]


def test_cosine_annealing_lr():
    opt = _optimizer((0.1, 0.02))
    sched = fnn.CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    for t, lrs in enumerate(_lrs_over(sched, 20)):       # past T_max the cosine goes on
        for lr, base in zip(lrs, (0.1, 0.02)):
            assert lr == pytest.approx(0.01 + (base - 0.01) * (1 + math.cos(math.pi * t / 8)) / 2,
                                       rel=1e-14)
    values = _lrs_over(fnn.CosineAnnealingLR(_optimizer(), T_max=4), 4)
    assert values[0] == [0.1] and values[2] == pytest.approx([0.05]) and values[4] == pytest.approx(
        [0.0], abs=1e-18)


def test_cosine_matches_pytorchs_recursive_form():
    """PyTorch computes CosineAnnealingLR recursively from the previous lr; written out
    here, it gives the closed form's values (within rounding) for several periods."""
    base, eta_min, t_max = 0.1, 0.001, 5
    sched = fnn.CosineAnnealingLR(_optimizer((base,)), T_max=t_max, eta_min=eta_min)
    lr = base
    for epoch in range(1, 4 * t_max):
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            lr = ((1 + math.cos(math.pi * epoch / t_max))
                  / (1 + math.cos(math.pi * (epoch - 1) / t_max)) * (lr - eta_min) + eta_min)
        sched.step()
        assert sched.get_last_lr()[0] == pytest.approx(lr, rel=1e-12, abs=1e-15)


def test_linear_warmup():
    opt = _optimizer((0.1, 0.5))
    sched = fnn.LinearWarmup(opt, warmup_steps=4)
    values = _lrs_over(sched, 7)
    for t, lrs in enumerate(values):
        factor = (t + 1) / 5 if t < 4 else 1.0
        assert lrs == pytest.approx([0.1 * factor, 0.5 * factor], rel=1e-15)
    zero_start = _lrs_over(fnn.LinearWarmup(_optimizer(), warmup_steps=4, start_factor=0.0), 5)
    assert [v[0] for v in zero_start] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    half = _lrs_over(fnn.LinearWarmup(_optimizer(), warmup_steps=2, start_factor=0.5), 3)
    assert [v[0] for v in half] == pytest.approx([0.05, 0.075, 0.1, 0.1])


def test_linear_warmup_then_cosine():
    opt = _optimizer((0.2,))
    sched = fnn.LinearWarmup(opt, warmup_steps=3,
                             then=fnn.CosineAnnealingLR(T_max=10, eta_min=0.002))
    for t, (lr,) in enumerate(_lrs_over(sched, 15)):
        if t < 3:
            expected = 0.2 * (t + 1) / 4
        else:
            expected = 0.002 + (0.2 - 0.002) * (1 + math.cos(math.pi * (t - 3) / 10)) / 2
        assert lr == pytest.approx(expected, rel=1e-14)
    nested = fnn.LinearWarmup(warmup_steps=2, then=fnn.StepLR(step_size=2, gamma=0.1))
    assert [nested.lr_at(1.0, t) for t in range(7)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 0.1, 0.1, 0.01])


# --------------------------------------------------------------------------- plateau
def test_reduce_on_plateau_traced_by_hand():
    """factor 0.5, patience 2, cooldown 1, threshold 10% (rel, min), from lr 1:
    step 1 sets best 10; 9.5, 9.2, 9.1 are not below 9 -> bad 1, 2, 3 > 2: lr 0.5 and
    one cooldown step; 8.0 is better (best 8); then 8.0 x5: bad 1, 2, 3 -> lr 0.25,
    cooldown swallows the next bad step."""
    opt = _optimizer((1.0,))
    sched = fnn.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, threshold=0.1)
    metrics = [10, 9.5, 9.2, 9.1, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    expected = [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    got = []
    for m in metrics:
        sched.step(m)
        got.append(opt.lr)
    assert got == expected
    assert sched.best == 8.0 and sched.last_step == 10


def test_reduce_on_plateau_modes_floors_and_eps():
    opt = _optimizer((1.0, 0.01))
    sched = fnn.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0,
                                  threshold=0.5, threshold_mode="abs", min_lr=[0.05, 0.0],
                                  eps=1e-3)
    for metric in (0.5, 1.2, 1.6):      # 1.2 > 0.5 + 0.5: better; 1.6 < 1.7: bad
        sched.step(metric)
    # group 0: 1.0 -> max(0.1, 0.05); group 1: 0.01 -> 0.001, a change of 0.009 > eps
    assert sched.get_last_lr() == pytest.approx([0.1, 0.001])
    sched.step(0.0)
    # group 0: max(0.01, 0.05) = 0.05; group 1: 0.0001 is a change below eps: kept
    assert sched.get_last_lr() == pytest.approx([0.05, 0.001])
    sched.step(0.0)
    assert sched.get_last_lr() == pytest.approx([0.05, 0.001])      # at the floor
    nan = fnn.ReduceLROnPlateau(_optimizer((1.0,)), patience=0)
    nan.step(float("nan"))          # a NaN metric is never an improvement
    nan.step(1.0)
    assert nan.best == 1.0 and nan.get_last_lr() == [0.1]


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize("make", [
    lambda opt: fnn.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: fnn.LinearWarmup(opt, warmup_steps=3, then=fnn.CosineAnnealingLR(T_max=5)),
    lambda opt: fnn.ReduceLROnPlateau(opt, patience=1, factor=0.5, cooldown=1),
], ids=["step", "warmup_cosine", "plateau"])
def test_schedule_state_dict_resumes(make):
    metrics = [5, 4, 4.5, 4.4, 4.3, 3, 3.1, 3.2, 3.3, 3.4]

    def advance(sched, values):
        for m in values:
            sched.step(m) if isinstance(sched, fnn.ReduceLROnPlateau) else sched.step()

    straight = make(_optimizer((0.1, 0.3)))
    advance(straight, metrics)
    first = make(_optimizer((0.1, 0.3)))
    advance(first, metrics[:4])
    saved_sched, saved_opt = first.state_dict(), first.optimizer.state_dict()
    import json
    saved_sched = json.loads(json.dumps(saved_sched))            # JSON-compatible
    resumed_opt = _optimizer((0.1, 0.3))
    resumed = make(resumed_opt)
    resumed_opt.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    assert resumed.get_last_lr() == first.get_last_lr()
    advance(resumed, metrics[4:])
    assert resumed.get_last_lr() == straight.get_last_lr()
    assert resumed.state_dict() == straight.state_dict()


def test_schedule_config_round_trip():
    from fastnn.schedules import schedule_from_spec, schedule_spec
    for sched in (fnn.StepLR(step_size=3, gamma=0.2), fnn.CosineAnnealingLR(T_max=7, eta_min=1e-4),
                  fnn.LinearWarmup(warmup_steps=2, then=fnn.StepLR(step_size=4)),
                  fnn.ReduceLROnPlateau(mode="max", min_lr=[0.1, 0.2], monitor="val_accuracy")):
        again = schedule_from_spec(schedule_spec(sched))
        assert type(again) is type(sched) and repr(again) == repr(sched)


# --------------------------------------------------------------------------- fit
def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)


def _model(seed=0):
    return fnn.Sequential(fnn.Linear(6, 8), fnn.ReLU(), fnn.Linear(8, 3), seed=seed,
                          dtype="float64")


def test_fit_steps_a_schedule_per_epoch_and_records_lr():
    x, y = _data()
    model = _model()
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy",
                  lr_schedule=fnn.StepLR(step_size=2, gamma=0.5))
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert model.optimizer.lr == pytest.approx(0.025) and model.lr_schedule.last_step == 5
    plain = _model()
    plain.compile(optimizer="adam", loss="cross_entropy")
    assert "lr" not in plain.fit(x, y, epochs=1, verbose=0).history


def test_fit_steps_a_warmup_per_batch():
    x, y = _data(n=100)
    model = _model()
    model.compile(optimizer=fnn.Adam(lr=1e-2), loss="cross_entropy",
                  lr_schedule=fnn.LinearWarmup(warmup_steps=10), schedule_interval="batch")
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)     # 4 batches per epoch
    assert model.lr_schedule.last_step == 8
    assert model.optimizer.lr == pytest.approx(1e-2 * 9 / 11)
    assert history.history["lr"] == pytest.approx([1e-2 * 5 / 11, 1e-2 * 9 / 11])


def test_fit_reduces_on_plateau_of_the_validation_loss():
    x, y = _data()
    model = _model()
    # a threshold no epoch can beat: every epoch after the first is "bad"
    sched = fnn.ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.99)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="cross_entropy", metrics=["accuracy"],
                  lr_schedule=sched)
    history = model.fit(x, y, epochs=4, batch_size=32, validation_data=(x[:40], y[:40]),
                        verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert sched.best == history.history["val_loss"][0]
    on_training_loss = fnn.ReduceLROnPlateau(patience=0, threshold=0.99)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="cross_entropy", lr_schedule=on_training_loss)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert on_training_loss.best == history.history["loss"][0]
    watch_accuracy = fnn.ReduceLROnPlateau(mode="max", monitor="val_accuracy")
    model.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"],
                  lr_schedule=watch_accuracy)
    with pytest.raises(ValueError, match="'val_accuracy', which this fit does not log"):
        model.fit(x, y, epochs=1, verbose=0)
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    assert watch_accuracy.best == history.history["val_accuracy"][0]


def test_a_schedule_built_with_the_optimizer_keeps_driving_it():
    model = _model()
    opt = fnn.Adam(model.parameters(), lr=0.01)
    sched = fnn.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    model.compile(optimizer=opt, loss="cross_entropy", lr_schedule=sched)
    assert sched.last_step == 1 and opt.lr == 0.005
    other = fnn.StepLR(step_size=1)
    model.compile(optimizer="rmsprop", loss="cross_entropy", lr_schedule=other)
    assert other.optimizer is model.optimizer and other.base_lrs == [0.01]


@pytest.mark.parametrize("make", [
    lambda: fnn.CosineAnnealingLR(T_max=4, eta_min=1e-3),
    lambda: fnn.ReduceLROnPlateau(patience=0, factor=0.5, threshold=0.05),
], ids=["cosine", "plateau"])
def test_saved_and_resumed_run_continues_the_schedule(tmp_path, make):
    """fit 4 epochs, or fit 2 + save + fastnn.load + fit 2: identical weights (float64,
    bit for bit), learning rates and schedule state."""
    x, y = _data()
    val = (x[:32], y[:32])

    def compiled():
        model = _model()
        model.compile(optimizer=fnn.AdamW(fnn.weight_decay_groups(model), lr=1e-2),
                      loss="cross_entropy", metrics=["accuracy"], lr_schedule=make())
        return model

    straight = compiled()
    h_straight = straight.fit(x, y, epochs=4, batch_size=32, shuffle=False,
                              validation_data=val, verbose=0)
    first = compiled()
    h_first = first.fit(x, y, epochs=2, batch_size=32, shuffle=False, validation_data=val,
                        verbose=0)
    first.save(tmp_path / "mid.fnn")
    resumed = fnn.load(tmp_path / "mid.fnn")
    assert type(resumed.lr_schedule) is type(straight.lr_schedule)
    assert [len(g["params"]) for g in resumed.optimizer.param_groups] == [2, 2]
    h_resumed = resumed.fit(x, y, epochs=2, batch_size=32, shuffle=False, validation_data=val,
                            verbose=0)
    assert h_first.history["lr"] + h_resumed.history["lr"] == h_straight.history["lr"]
    assert resumed.lr_schedule.state_dict() == straight.lr_schedule.state_dict()
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


# --------------------------------------------------------------------------- errors
def test_schedule_errors_are_clear():
    opt = _optimizer()
    cases = [
        (lambda: fnn.StepLR(10), TypeError, "first argument is the optimizer"),
        (lambda: fnn.StepLR(opt), TypeError, "needs step_size"),
        (lambda: fnn.StepLR(step_size=0), ValueError, "step_size must be >= 1"),
        (lambda: fnn.StepLR(step_size=2.5), TypeError, "step_size must be an integer"),
        (lambda: fnn.StepLR(step_size=2, gamma=0), ValueError, "gamma must be > 0"),
        (lambda: fnn.CosineAnnealingLR(opt), TypeError, "needs T_max"),
        (lambda: fnn.CosineAnnealingLR(T_max=0), ValueError, "T_max must be >= 1"),
        (lambda: fnn.CosineAnnealingLR(T_max=3, eta_min=-1), ValueError, "eta_min must be >= 0"),
        (lambda: fnn.LinearWarmup(warmup_steps=0), ValueError, "warmup_steps must be >= 1"),
        (lambda: fnn.LinearWarmup(warmup_steps=2, start_factor=1.5), ValueError,
         "start_factor must be <= 1"),
        (lambda: fnn.LinearWarmup(warmup_steps=2, then=fnn.ReduceLROnPlateau()), TypeError,
         "closed-form"),
        (lambda: fnn.LinearWarmup(warmup_steps=2, then=fnn.StepLR(opt, step_size=1)),
         ValueError, "must not have an optimizer"),
        (lambda: fnn.ReduceLROnPlateau(factor=1.0), ValueError, "factor must be < 1"),
        (lambda: fnn.ReduceLROnPlateau(mode="median"), ValueError, "valid names: max, min"),
        (lambda: fnn.ReduceLROnPlateau(threshold_mode="pct"), ValueError, "abs, rel"),
        (lambda: fnn.ReduceLROnPlateau(patience=-1), ValueError, "patience must be >= 0"),
        (lambda: fnn.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2]), ValueError, "min_lr has 2"),
        (lambda: fnn.ReduceLROnPlateau(opt).step(), TypeError, r"sched.step\(val_loss\)"),
        (lambda: fnn.ReduceLROnPlateau(opt).step("low"), TypeError, "monitored metric"),
        (lambda: fnn.StepLR(step_size=1).step(), RuntimeError, "not bound to an optimizer"),
        (lambda: fnn.StepLR(fnn.SGD(), step_size=1), ValueError, "no parameters yet"),
    ]
    for make, error, message in cases:
        with pytest.raises(error, match=message):
            make()
    model = _model()
    with pytest.raises(TypeError, match="lr_schedule must be a schedule"):
        model.compile(lr_schedule="step")
    with pytest.raises(ValueError, match="schedule_interval='epoch'"):
        model.compile(lr_schedule=fnn.ReduceLROnPlateau(), schedule_interval="batch")
    with pytest.raises(ValueError, match="unknown schedule_interval 'week'"):
        model.compile(lr_schedule=fnn.StepLR(step_size=1), schedule_interval="week")
