"""Central finite differences for the backward tests (float64 models)."""
import itertools

import numpy as np


def central_differences(f, array, h=1e-6, limit=None):
    """``d f() / d array[index]`` by central differences, ``array`` perturbed in place and
    restored; every entry, or the first ``limit`` in C order (the others are NaN)."""
    numeric = np.full(array.shape, np.nan)
    for index in itertools.islice(np.ndindex(*array.shape), limit):
        saved = array[index]
        array[index] = saved + h
        up = f()
        array[index] = saved - h
        down = f()
        array[index] = saved
        numeric[index] = (up - down) / (2 * h)
    return numeric


def check_model_gradients(model, x, rng, params=None, input_grad=True, rtol=1e-5, atol=1e-7):
    """Every gradient of ``sum(w * model(x))`` (random ``w``) with respect to ``params``
    (default: all the model's parameters) and, with ``input_grad``, to ``x``, against
    central differences."""
    y = model(x)
    w = rng.normal(size=y.shape)
    model.zero_grad()
    dx = model.backward(w, input_grad=input_grad)

    def loss():
        return np.sum(w * model(x))

    named = (model.named_parameters() if params is None else
             [(str(i), p) for i, p in enumerate(params)])
    for name, p in named:
        np.testing.assert_allclose(p.grad, central_differences(loss, p.data), rtol=rtol,
                                   atol=atol, err_msg=name)
    if input_grad:
        np.testing.assert_allclose(dx, central_differences(loss, x), rtol=rtol, atol=atol)
